"""The live twin: process image, change sets, aggregates, desired vs reported state, history."""

from twin.commands import CommandBook, CommandRecord
from twin.subscription import ChangeSet, Subscription
from twin.twin import Twin

__all__ = ["ChangeSet", "CommandBook", "CommandRecord", "Subscription", "Twin"]
