"""`when` expressions that attack the operator (issue 26): each fits the CRD's bound on a
`when`, and each compiles."""

from __future__ import annotations

#: The longest value a parameter may have: what a hostile `when` reads.
LONG = "x" * 1024


def doubled(depth: int) -> str:
    """params.s concatenated with itself 2**depth times, as a balanced tree (cel-cpp refuses
    parse trees deeper than 32)."""
    return "params.s" if depth == 0 else f"({doubled(depth - 1)} + {doubled(depth - 1)})"


def numbers(n: int) -> str:
    return "[" + ",".join(map(str, range(n))) + "]"


#: 2,500 strings of 32 KiB in a list of lists: over `s` = LONG it took about 400 MiB of the
#: operator's memory for 520 characters (the issue's 1,500 characters took 955 MiB).
MEMORY_BOMB = f"size({numbers(50)}.map(i, {numbers(50)}.map(j, {doubled(5)}))) > 0"
#: A regular expression that takes 0.05 to 0.2 s to match LONG, two hundred times: 10 s of CPU
#: or more with no memory to speak of (twenty times took 1.1 to 1.4 s: too near the 1 s budget
#: to be sure to exceed it).
BUSY = f"{numbers(200)}.all(i, !params.s.matches('(x{{1,30}}){{1,30}}y'))"
#: 10**4 iterations: over cel-cpp's iteration budget, which raises RuntimeError.
ITERATIONS = "".join(f"{numbers(10)}.all({v}, " for v in "abcd") + "true" + ")" * 4
