"""The MoPPA unit, its router, route regularization and configuration (torch only)."""
from .config import MoPPAConfig, RouteRegConfig
from .route_reg import decayed_weight, route_penalty
from .router import Router
from .unit import MoPPAUnit

__all__ = ['MoPPAConfig', 'RouteRegConfig', 'MoPPAUnit', 'Router', 'route_penalty',
           'decayed_weight']
