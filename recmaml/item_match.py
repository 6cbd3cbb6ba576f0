"""Do a run's history ids match the model's items? Counted over the whole run (every chunk of a streamed
history), then judged once at its end:

    tally = ItemTally(rec.items)
    for chunk in chunks:
        tally.add(chunk)
    tally.check("history")   # DataError when no row names a known item; a loud warning when most do not

Numeric ids against a model fitted on 'm'-prefixed ones name no known item, and without this check every
user would silently get the same list (the meta-learned start's)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from recmaml.data import UNKNOWN, Interactions, Vocabulary
from recmaml.errors import DataError, spelled, warn_caller

EXAMPLES = 3  # ids quoted from each side


class ItemMismatchWarning(UserWarning):
    """Most rows of a history name items the model does not know: likely ids of another kind or catalog."""


@dataclass
class ItemTally:
    """History rows of known and of unknown items over a run, a few unknown ids, and the users left
    without one known row (they are ranked from the meta-learned start, as users with no history)."""

    model_items: Vocabulary
    rows: int = 0
    unknown_rows: int = 0
    users_only_unknown: int = 0
    unknown_examples: list = field(default_factory=list)

    def add(self, history: Interactions) -> None:
        known_item = self.model_items.index(history.items.ids) != UNKNOWN  # once per distinct id: cheap
        known_row = known_item[history.item_idx]
        self.rows += len(known_row)
        self.unknown_rows += int(len(known_row) - known_row.sum())
        users_with_rows = len(np.unique(history.user_idx))
        self.users_only_unknown += users_with_rows - len(np.unique(history.user_idx[known_row]))
        if len(self.unknown_examples) < EXAMPLES:
            fresh = [i for i in history.items.ids[~known_item][:EXAMPLES].tolist() if i not in self.unknown_examples]
            self.unknown_examples += fresh[:EXAMPLES - len(self.unknown_examples)]

    def check(self, what: str = "history", allow: bool = False) -> None:
        """Raise when no row named a known item, warn when most did not; `allow` (allow_unknown_items=True,
        CLI --allow-unknown-items) accepts both, for jobs that mean it."""
        if allow or self.rows == 0 or self.unknown_rows * 2 <= self.rows:
            return
        ours = [_quoted(i) for i in self.unknown_examples]
        theirs = [_quoted(i) for i in self.model_items.ids[:EXAMPLES].tolist()]
        examples = f"the {what}'s items are e.g. {', '.join(ours)}; the model's are e.g. {', '.join(theirs)}"
        cause = likely_cause(self.unknown_examples, self.model_items.ids[:50].tolist())
        allow_it = spelled("allow_unknown_items=True", "--allow-unknown-items")
        if self.unknown_rows == self.rows:
            raise DataError(f"{what}: none of its {self.rows:,} rows names an item the model knows ({examples}); "
                            f"{cause}. Every user would get the same list: pass {allow_it} if the job means that")
        warn_caller(ItemMismatchWarning(
            f"{what}: {self.unknown_rows:,} of its {self.rows:,} rows ({100 * self.unknown_rows / self.rows:.0f}%) "
            f"name items the model does not know ({examples}); {cause}; {_users(self.users_only_unknown)} left with "
            f"no known item (pass {allow_it} to accept this without a warning)"))


def _users(n: int) -> str:
    return "1 user is" if n == 1 else f"{n:,} users are"


def _quoted(item_id) -> str:
    return repr(item_id) if isinstance(item_id, str) else str(item_id)


_PREFIXED = re.compile(r"^(\D+)(\d+)$")


def _prefix(ids: list) -> str | None:
    """The text prefix every id shares before its digits ('m' of 'm12', 'm7'), or None."""
    matches = [_PREFIXED.match(str(i)) for i in ids]
    prefixes = {m.group(1) for m in matches if m}
    return prefixes.pop() if ids and all(matches) and len(prefixes) == 1 else None


def _numeric(ids: list) -> bool:
    return bool(ids) and all(isinstance(i, (int, np.integer)) or str(i).lstrip("-").isdigit() for i in ids)


def likely_cause(history_ids: list, model_ids: list) -> str:
    """Why the ids may differ, from a few of each: a prefix one side has and the other lacks, text against
    numbers, else another column or another catalog."""
    theirs, ours = _prefix(model_ids), _prefix(history_ids)
    if theirs and _numeric(history_ids):
        return (f"likely cause: the model's ids carry the prefix {theirs!r} and the history's are bare numbers; "
                f"write them as the model does (e.g. {theirs}{history_ids[0]})")
    if ours and _numeric(model_ids):
        return (f"likely cause: the history's ids carry the prefix {ours!r} and the model's are bare numbers; "
                "strip it")
    if ours and theirs and ours != theirs:
        return f"likely cause: the history's ids carry the prefix {ours!r}, the model's {theirs!r}"
    item_col = spelled("item_col=", "--item-col")
    return (f"likely cause: the item column is another column than the one the model was fitted on ({item_col}), "
            "or the model was fitted on another catalog")
