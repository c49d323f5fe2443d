"""The request pipeline: micro-batching, shadow scoring, feedback, observers and metrics."""
