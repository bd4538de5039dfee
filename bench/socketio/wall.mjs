// Wall-clock seconds, sub-millisecond, the same clock as Python's time.time() (which stamps
// Tether's tokens) and as the other Node process's: Socket.IO's tokens are stamped by server.mjs
// and read by client.mjs, each with this module. Not performance.timeOrigin: Node takes it
// once at start, from two clock reads, and a start under load skewed it (mean offset from Date.now() +0.57 ms in one of eight
// processes on a busy machine, against +0.50 for an exact clock), enough to make Socket.IO's
// delays of a fraction of a millisecond negative in CI. Date.now() is truncated to the
// millisecond, so Date.now() - performance.now() is at most the origin and within a millisecond
// of it; its maximum over 5 ms of reads is the origin to a few µs, and a read delayed by the
// scheduler only lowers a sample, never the maximum.
function calibratedWall() {
  let origin = -Infinity;
  const until = performance.now() + 5;
  while (performance.now() < until) {
    const estimate = Date.now() - performance.now();
    if (estimate > origin) origin = estimate;
  }
  return () => (origin + performance.now()) / 1000;
}
export const wall = calibratedWall();
