"""What producers and workers share: settings (``settings``), provider definitions
(``providers``), the error tree (``errors``), and Redis keys, ids and the wire format
(``schema``). Modules here must not import ``producers`` or ``workers``."""
