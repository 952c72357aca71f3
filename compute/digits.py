"""Integers of any length to and from decimal digits, exactly and in near-linear time.

Python refuses ``int(text)`` and ``str(value)`` past 4300 digits
(``sys.get_int_max_str_digits``): its conversions are quadratic, and the limit guards a
process against hostile input. Sums and numbers of any size are valid here, so these
helpers convert piece by piece instead of lifting the limit process-wide (which would
also lift it for the API's parsing of what clients send).
"""

import decimal
import json
from collections.abc import Mapping

# int() and str() take this many digits at once, under Python's limit.
INT_DIGITS_AT_ONCE = 4000
# Bits converted by one Decimal(int) call in int_text: small enough to be under the limit.
BITS_AT_ONCE = 8000


def digits_value(digits: bytes) -> int:
    """int(digits) past Python's digit limit: halves, recursively (near-linear, unlike
    folding chunk by chunk)."""
    if len(digits) <= INT_DIGITS_AT_ONCE:
        return int(digits or b"0")
    half = len(digits) // 2
    return digits_value(digits[:half]) * 10 ** (len(digits) - half) + digits_value(digits[half:])


def int_text(value: int) -> str:
    """str(value) past Python's digit limit.

    Splits the value by powers of two and adds the halves back in decimal arithmetic,
    whose multiplication (libmpdec's) is fast at any size: a million digits take about a
    second, where str() would take minutes. (CPython 3.12's _pylong does the same.)"""
    if -(10**INT_DIGITS_AT_ONCE) < value < 10**INT_DIGITS_AT_ONCE:
        return str(value)
    powers: dict[int, decimal.Decimal] = {}

    def power_of_two(bits: int) -> decimal.Decimal:
        if bits not in powers:
            half = bits >> 1
            powers[bits] = (
                decimal.Decimal(2) ** bits if bits <= BITS_AT_ONCE else power_of_two(half) * power_of_two(bits - half)
            )
        return powers[bits]

    def convert(part: int, bits: int) -> decimal.Decimal:
        if bits <= BITS_AT_ONCE:
            return decimal.Decimal(part)
        half = bits >> 1
        high = part >> half
        return convert(part - (high << half), half) + convert(high, bits - half) * power_of_two(half)

    with decimal.localcontext() as context:
        context.prec = decimal.MAX_PREC
        context.Emax = decimal.MAX_EMAX
        context.traps[decimal.Inexact] = True  # never rounds: fail loudly if it ever would
        text = str(convert(abs(value), abs(value).bit_length()))
    return "-" + text if value < 0 else text


def json_ints(fields: Mapping[str, int]) -> str:
    """A JSON object of integers, as json.dumps writes it but with no digit limit."""
    return "{" + ", ".join(f"{json.dumps(name)}: {int_text(value)}" for name, value in fields.items()) + "}"
