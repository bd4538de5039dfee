"""The REST API's pagination and its strict integer parameters (their own module: DRF imports
it while building its generic views, so it must not import them)."""

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request


def strict_int(raw: str, name: str, minimum: int = 0) -> int:
    """An integer of at least `minimum` in ASCII digits, else HTTP 400 `{name: [...]}`.
    `str.isdigit` also accepts '²' or '٣', which int() then refuses (the HTTP 500 found in
    issue 9), or reads as another number."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise ValidationError({name: [f"must be {kind}"]})
    return int(raw)


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=`; a limit above API_MAX_PAGE_SIZE is cut to it, so no request can ask
    for a whole table in one response. Both are strict like `after_seq` (issue 23): DRF's own
    reading turns `limit=-1` or `limit=abc` into the default page, so a client's typo looked
    like a short list instead of an error."""

    @property
    def max_limit(self) -> int:
        return settings.API_MAX_PAGE_SIZE

    def get_limit(self, request: Request) -> int:
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return self.default_limit
        return min(strict_int(raw, self.limit_query_param, minimum=1), self.max_limit)

    def get_offset(self, request: Request) -> int:
        raw = request.query_params.get(self.offset_query_param)
        return 0 if raw is None else strict_int(raw, self.offset_query_param)
