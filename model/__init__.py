"""The object model of the VPP: natures, points, quality, units, commands, site config. Pure."""

from model.command import TERMINAL_STATES, Command, CommandState
from model.errors import ConfigIssue, ModelError, SiteConfigError, UnknownPointError
from model.natures import NATURES, ResourceKind, Role
from model.points import Access, DType, PointSpec
from model.quality import Quality
from model.resources import Aggregator, Limits, Resource, VPPConfig, plant_ref
from model.sample import Sample
from model.site import SiteConfig, load_site, parse_site

__all__ = [
    "NATURES",
    "TERMINAL_STATES",
    "Access",
    "Aggregator",
    "Command",
    "CommandState",
    "ConfigIssue",
    "DType",
    "Limits",
    "ModelError",
    "PointSpec",
    "Quality",
    "Resource",
    "ResourceKind",
    "Role",
    "Sample",
    "SiteConfig",
    "SiteConfigError",
    "UnknownPointError",
    "VPPConfig",
    "load_site",
    "parse_site",
    "plant_ref",
]
