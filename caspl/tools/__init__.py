"""Command-line tools of the core (`python -m caspl.tools.<name>`); they read files, never the plugins."""
