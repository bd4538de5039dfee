"""Agents: given a conversation's context, stream the answer's text, and (acting agents) call
tools and models through the runtime's journal.

May import: `sessions_app` and below (Django settings for their options). The dotted paths
(`realtime.agents.demo.DemoAgent`, ...) are settings values (`REALTIME_AGENT`) and stay put."""

from realtime.agents.base import Agent, AgentContext, load_agent

__all__ = ["Agent", "AgentContext", "load_agent"]
