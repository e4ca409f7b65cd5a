"""What runs on instances and clients: an OpenAI-compatible model server with a serving engine's timing
(serve), a metrics agent that reads inference servers (metrics_agent), and a load generator (load)."""
