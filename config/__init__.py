"""Settings, provider definitions and the schema both producers and workers share."""
