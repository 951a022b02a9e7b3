"""A batched function with a max_batch out of range: the worker refuses the module at load."""
import zfleet


def seg(state, jobs):
    return [b""] * len(jobs)


FUNCTIONS = {"seg": zfleet.batched(seg, max_batch=0, max_delay_ms=5)}
