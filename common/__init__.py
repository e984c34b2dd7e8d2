"""What every service shares: the settings module (environment variables) and logging configuration."""
