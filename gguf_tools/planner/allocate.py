"""Choose a type per tensor so the file fits a byte budget with the least predicted damage.

Rate-distortion bit allocation: each tensor's candidates reduced to their lower convex hull in (bytes, damage); a
Lagrange multiplier, found by bisection, prices a byte the same in every tensor; then the bytes left under the budget
are filled greedily with the upgrade (any candidate, hull or not) that removes most damage per byte. The budget is the
whole file: the fixed bytes (header, metadata, tensors that keep their type) are counted before any choice.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BudgetError

TOLERANCE = 0.01   # the file lands in [target * (1 - TOLERANCE), target]


@dataclass(frozen=True)
class Option:
    type: str
    bytes: int
    damage: float


@dataclass
class Allocation:
    types: dict[str, str]
    bytes: dict[str, int]
    damage: dict[str, float]
    total: int          # the whole file, fixed bytes included
    target: int

    @property
    def predicted(self) -> float:
        return sum(self.damage.values())


def pareto(options: list[Option]) -> list[Option]:
    """Options that no cheaper option beats, cheapest first."""
    out: list[Option] = []
    for o in sorted(options, key=lambda o: (o.bytes, o.damage)):
        if not out or o.damage < out[-1].damage:
            out.append(o)
    return out


def hull(options: list[Option]) -> list[Option]:
    """The lower convex hull of the Pareto front: the choices some price per byte makes optimal."""
    h: list[Option] = []
    for o in pareto(options):
        while len(h) >= 2:
            a, b = h[-2], h[-1]
            # drop b when it lies on or above the segment a -> o
            if (b.damage - a.damage) * (o.bytes - a.bytes) >= (o.damage - a.damage) * (b.bytes - a.bytes):
                h.pop()
            else:
                break
        h.append(o)
    return h


def reachable(tensors: dict[str, list[Option]], fixed: int) -> tuple[int, int]:
    """The smallest and the largest file the candidates allow."""
    lo = fixed + sum(min(o.bytes for o in opts) for opts in tensors.values())
    hi = fixed + sum(max(o.bytes for o in opts) for opts in tensors.values())
    return lo, hi


def check_budget(tensors: dict[str, list[Option]], fixed: int, target: int) -> None:
    """BudgetError, naming the reachable range, when no choice lands in [target - 1%, target]."""
    lo, hi = reachable(tensors, fixed)
    if target < lo or target * (1 - TOLERANCE) > hi:
        raise BudgetError(f"a target of {target:,} bytes is out of reach: files of this model can be {lo:,} to"
                          f" {hi:,} bytes ({lo / 1e6:.2f} MB to {hi / 1e6:.2f} MB)")


def allocate(tensors: dict[str, list[Option]], fixed: int, target: int) -> Allocation:
    """The least-damage choice whose file is at most ``target`` bytes; BudgetError outside the reachable range."""
    check_budget(tensors, fixed, target)
    hulls = {n: hull(opts) for n, opts in tensors.items()}
    fronts = {n: pareto(opts) for n, opts in tensors.items()}

    def choose(lam: float) -> dict[str, Option]:
        return {n: min(h, key=lambda o: (o.damage + lam * o.bytes, o.bytes)) for n, h in hulls.items()}

    def total(choice: dict[str, Option]) -> int:
        return fixed + sum(o.bytes for o in choice.values())

    lam_lo, lam_hi = 0.0, 1.0
    while total(choose(lam_hi)) > target and lam_hi < 1e30:
        lam_hi *= 4
    if total(choose(lam_lo)) <= target:
        lam_hi = lam_lo
    for _ in range(100):
        if lam_hi - lam_lo <= 1e-12 * lam_hi:
            break
        mid = (lam_lo + lam_hi) / 2
        if total(choose(mid)) <= target:
            lam_hi = mid
        else:
            lam_lo = mid
    choice = choose(lam_hi)
    if total(choice) > target:   # the bisection's price never undercuts the cheapest choice of all
        choice = {n: f[0] for n, f in fronts.items()}
    choice = _fill(choice, tensors, target - total(choice))
    return Allocation({n: o.type for n, o in choice.items()}, {n: o.bytes for n, o in choice.items()},
                      {n: o.damage for n, o in choice.items()}, total(choice), target)


def _fill(choice: dict[str, Option], options: dict[str, list[Option]], left: int) -> dict[str, Option]:
    """Spend ``left`` bytes on the upgrades that remove most damage per byte, one at a time; then on upgrades that
    remove none (a group whose probe measured nothing), so the file still comes to the size asked for."""
    choice = dict(choice)
    while True:
        best, best_key = None, None
        for n, cur in choice.items():
            for o in options[n]:
                extra = o.bytes - cur.bytes
                if 0 < extra <= left and o.damage <= cur.damage:
                    key = ((cur.damage - o.damage) / extra, extra)
                    if best_key is None or key > best_key:
                        best, best_key = (n, o), key
        if best is None:
            return choice
        n, o = best
        left -= o.bytes - choice[n].bytes
        choice[n] = o
