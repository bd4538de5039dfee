"""Agents: given a conversation's context, stream the answer's text."""

from realtime.agents.base import Agent, AgentContext, load_agent

__all__ = ["Agent", "AgentContext", "load_agent"]
