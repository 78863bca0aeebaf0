"""Corrupted metadata, fuzzed (fs/testing/corrupt.py): one meta block, super or quorum block
of a small populated volume is damaged (bits flipped, zeroed, one field changed; crc fixed
up or not).  fsck, then a mount that reads everything, writes, unmounts and remounts, must
end within a time bound without a traceback, and whatever changes what the mount reads or
writes must be reported by fsck.  scripts/fuzz runs the long soak of the same probe."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fs.testing import corrupt

PROBE_TIMEOUT_S = 90  # generous: CI runs other tests beside this one


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    meta, data = corrupt.make_template(str(tmp_path_factory.mktemp("template")))
    work = str(tmp_path_factory.mktemp("copy"))
    clean = corrupt.probe(*corrupt.copy_volume(meta, data, work), PROBE_TIMEOUT_S)
    return meta, data, work, clean, corrupt.meta_blocks(meta)


def test_the_clean_template_probes_clean(template):
    _meta, _data, _work, clean, blocks = template
    assert clean["fsck"] == [] and clean["tracebacks"] == []
    assert corrupt.classify(clean, clean) == "harmless", corrupt.explain(clean, clean)
    assert len(clean["dump"]) > 500 and not clean["errors"] and not clean["lost"]
    # several btree levels and extent lists to corrupt
    assert any("level 1" in what for _b, what in blocks), blocks


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(target=st.sampled_from(corrupt.TARGETS), how=st.sampled_from(corrupt.HOWS),
       fix_crc=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_corruption_is_reported_and_never_crashes_or_hangs(template, target, how, fix_crc,
                                                           seed):
    meta, data, work, clean, blocks = template
    c = corrupt.Corruption(target, how, fix_crc, seed)
    m, d = corrupt.copy_volume(meta, data, work)
    hit = corrupt.corrupt(m, d, c, blocks)
    result = corrupt.probe(m, d, PROBE_TIMEOUT_S)
    outcome = corrupt.classify(result, clean)
    assert outcome not in corrupt.FATAL, f"{c}: {hit}: {outcome}\n" + \
        corrupt.explain(result, clean)


@pytest.mark.parametrize("target,how,expect", [
    # the server cannot read a root of the super: the mount is refused with the reason
    (corrupt.TARGET_SUPER, corrupt.HOW_ZERO, "refused"),
    # a quorum block with a bad crc: refused, and fsck reads quorum blocks too
    (corrupt.TARGET_QUORUM, corrupt.HOW_FLIP, "refused"),
])
def test_known_refusals(template, target, how, expect):
    meta, data, work, clean, blocks = template
    c = corrupt.Corruption(target, how, False, 1)
    m, d = corrupt.copy_volume(meta, data, work)
    corrupt.corrupt(m, d, c, blocks)
    result = corrupt.probe(m, d, PROBE_TIMEOUT_S)
    assert corrupt.classify(result, clean) == expect, corrupt.explain(result, clean)
    assert result["fsck"]


def test_classify_refusals():
    clean = {"mount": "mounted", "errors": [], "lost": [], "dump": {"/a": {"ino": 1}}}

    def refused(reason, problems):
        return {"mount": "refused", "reason": reason, "fsck": problems, "tracebacks": []}

    # a quorum address of another host: valid configuration, no checker can call it damage
    assert corrupt.classify(refused("mount: EADDRNOTAVAIL: quorum slot 0 address "
                                    "111.0.0.1:5: Cannot assign requested address", []),
                            clean) == "altered"
    assert corrupt.classify(refused("mount: EIO: fs_root unreadable", ["fs_root: bad crc"]),
                            clean) == "refused"
    assert corrupt.classify(refused("mount: EIO: fs_root unreadable", []), clean) == "missed"


def test_empty_free_list_with_free_blocks_counted_is_refused(template):
    """Hypothesis found it: meta_free's ref zeroed in a super whose crc was fixed up.  The
    server then failed every commit with ENOSPC, at every election, and the mount hung."""
    from fs import format as fmt
    from fs.block import Device, read_super, write_super

    meta, data, work, clean, _blocks = template
    m, d = corrupt.copy_volume(meta, data, work)
    dev = Device(m)
    sb = read_super(dev)
    sb.meta_free = fmt.BlockRef(0, sb.meta_free.seq)
    write_super(dev, sb)
    dev.flush()
    dev.close()
    result = corrupt.probe(m, d, PROBE_TIMEOUT_S)
    assert corrupt.classify(result, clean) == "refused", corrupt.explain(result, clean)
    assert "corrupt allocator state: free_meta_blocks" in result["reason"]
    assert any("free_meta_blocks" in p for p in result["fsck"])
