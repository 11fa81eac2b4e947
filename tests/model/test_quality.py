"""Quality: IEC 61850 bits and the lossless mapping to IEC 104 QDS."""

from hypothesis import given
from hypothesis import strategies as st

from model import quality as q

ALL_104 = (
    q.IEC104Flags.IV | q.IEC104Flags.NT | q.IEC104Flags.SB | q.IEC104Flags.BL | q.IEC104Flags.OV
)


def test_every_iec104_flag_combination_round_trips() -> None:
    for flags in range(256):
        flags &= ALL_104
        assert q.to_iec104(q.from_iec104(flags)) == flags


@given(
    st.sampled_from(
        [
            0,
            q.IEC104Flags.IV,
            q.IEC104Flags.NT,
            q.IEC104Flags.SB,
            q.IEC104Flags.BL,
            q.IEC104Flags.OV,
        ]
    )
)
def test_single_flags_map_to_their_61850_meaning(flag: int) -> None:
    got = q.from_iec104(flag)
    expected = {
        0: q.GOOD,
        q.IEC104Flags.IV: q.Validity.INVALID,
        q.IEC104Flags.NT: q.Validity.QUESTIONABLE | q.OLD_DATA,
        q.IEC104Flags.SB: q.SUBSTITUTED,
        q.IEC104Flags.BL: q.OPERATOR_BLOCKED,
        q.IEC104Flags.OV: q.Validity.QUESTIONABLE | q.OVERFLOW,
    }[flag]
    assert got == expected


def test_61850_quality_maps_to_104_and_back_for_representable_bits() -> None:
    for validity in (q.Validity.GOOD, q.Validity.INVALID, q.Validity.QUESTIONABLE):
        for bits in (0, q.OLD_DATA, q.OVERFLOW, q.SUBSTITUTED, q.OPERATOR_BLOCKED):
            original = int(validity) | bits
            if bits in (q.OLD_DATA, q.OVERFLOW) and validity == q.Validity.GOOD:
                continue  # 61850 never has oldData/overflow with validity good
            if validity == q.Validity.QUESTIONABLE and bits not in (q.OLD_DATA, q.OVERFLOW):
                continue  # questionable without a 104-visible reason has no QDS form
            assert q.from_iec104(q.to_iec104(original)) == original


def test_not_topical_keeps_invalid_and_marks_old_data() -> None:
    assert q.not_topical(q.GOOD) == q.Validity.QUESTIONABLE | q.OLD_DATA
    inv = int(q.Validity.INVALID)
    assert q.not_topical(inv) == inv | q.OLD_DATA
    assert q.to_iec104(q.not_topical(q.GOOD)) == q.IEC104Flags.NT


def test_quality_view_names_bits() -> None:
    view = q.Quality(q.not_topical(q.GOOD) | q.SUBSTITUTED)
    assert view.validity == q.Validity.QUESTIONABLE
    assert set(view.details) == {"oldData", "substituted"}
    assert view.to_dict()["validity"] == "questionable"
    assert q.Quality(0).good
