"""Moved to :mod:`config.errors` (config/ must not import workers/); kept until every import is updated."""  # noqa: E501

from config.errors import *  # noqa: F403
from config.errors import __all__ as __all__
