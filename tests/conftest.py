import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _numpy_errors_raise():
    """Overflow, invalid operations and division by zero are bugs in a test run."""
    old = np.seterr(all="raise")
    yield
    np.seterr(**old)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
