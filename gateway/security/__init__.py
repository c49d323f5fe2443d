"""Who may move a decision: credentials, per-answer receipts, rate limits and the keys behind them."""
