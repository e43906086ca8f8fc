"""The agent's environment: actions, the episode record and state, page vision, prompts, and `AgentEnvironment`,
which steps one episode (docs/agent.md)."""
