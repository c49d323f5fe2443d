"""The comparison report: read the runs, analyse them, render text and HTML, log summary runs."""
