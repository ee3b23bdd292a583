import pytest

from bpt.plan import partition


@pytest.mark.parametrize("n,size", [(1294, 128), (1000, 100), (10, 3), (5, 100), (1001, 100)])
def test_subsets_cover_every_sample_exactly_once(n, size):
    ranges = partition.subsets(n, size)
    covered = [i for start, end in ranges for i in range(start, end)]
    assert covered == list(range(n))
    assert all(end - start >= min(size // 2, n) for start, end in ranges)


def test_short_tail_is_folded_into_previous_subset():
    assert partition.subsets(1010, 100)[-1] == (900, 1010)
    assert partition.subsets(1060, 100)[-1] == (1000, 1060)


def test_epoch_order_is_seeded_and_differs_between_epochs():
    assert partition.epoch_order(20, 0, 1) == partition.epoch_order(20, 0, 1)
    assert partition.epoch_order(20, 0, 1) != partition.epoch_order(20, 1, 1)
    assert sorted(partition.epoch_order(20, 3, 1)) == list(range(20))


def test_waves_split_an_epoch_into_rounds_for_sync():
    waves = partition.waves(10, 0, 0, 4)
    assert [len(w) for w in waves] == [4, 4, 2]
    assert sorted(sum(waves, [])) == list(range(10))
    assert partition.waves(10, 0, 0, None) == [partition.epoch_order(10, 0, 0)]
