"""rnnlab.settings: one parser per kind of variable, one error shape, read once."""

from __future__ import annotations

import dataclasses
import os

import pytest

from rnnlab import settings


def test_an_empty_environment_gives_the_defaults():
    got = settings.read({})
    home_cache = os.path.join(settings._account_home(), ".cache", "rnnlab")
    assert got == settings.Settings(cache_dir=home_cache)
    assert got.threads == settings.cores() >= 1


def test_each_kind_parses_by_its_one_rule():
    got = settings.read({
        "RNNLAB_BLAS": " MKL ", "RNNLAB_NUM_THREADS": "3", "RNNLAB_MALLOC": "System",
        "RNNLAB_VECTOR_WIDTH": "default", "RNNLAB_NO_NUMBA": "yes", "RNNLAB_PACKED": "Off",
        "RNNLAB_CACHE_DIR": "/tmp/c", "RNNLAB_MPI_TIMEOUT": "2.5", "RNNLAB_TILES": " On ",
        "RNNLAB_SPIN": " 0.01 ",
    })  # fmt: skip
    assert got == settings.Settings(blas="mkl", num_threads=3, malloc="system", vector_width=0,
                                    no_numba=True, packed=False, cache_dir="/tmp/c",
                                    mpi_timeout=2.5, tiles="on", spin=0.01)  # fmt: skip
    assert got.threads == 3
    assert settings.read({"RNNLAB_VECTOR_WIDTH": "auto"}).vector_width is None
    assert settings.read({"RNNLAB_VECTOR_WIDTH": "16"}).vector_width == 16
    assert settings.read({"XDG_CACHE_HOME": "/x"}).cache_dir == "/x/rnnlab"
    assert settings.read({"RNNLAB_SPIN": "0"}).spin == 0.0  # a duration that may be 0
    for text, value in (("1", True), ("TRUE", True), ("on", True), ("0", False), ("no", False)):
        assert settings.read({"RNNLAB_NO_NUMBA": text}).no_numba is value


def test_the_cache_folder_is_never_a_relative_guess(monkeypatch):
    """RNNLAB_CACHE_DIR with ~ expanded; XDG_CACHE_HOME only where absolute (the XDG spec);
    HOME, else the account's home; with neither, a folder of the user's in the temporary
    folder, never "~/.cache" relative to wherever the process started."""
    import tempfile

    monkeypatch.setenv("HOME", "/home/u")
    assert settings.read({"RNNLAB_CACHE_DIR": "~/rc"}).cache_dir == "/home/u/rc"
    assert settings.read({"RNNLAB_CACHE_DIR": " /c ", "XDG_CACHE_HOME": "/x"}).cache_dir == "/c"
    assert settings.read({"XDG_CACHE_HOME": "/x", "HOME": "/h"}).cache_dir == "/x/rnnlab"
    for xdg in ("relative/dir", " ", ""):
        got = settings.read({"XDG_CACHE_HOME": xdg, "HOME": "/h"}).cache_dir
        assert got == "/h/.cache/rnnlab", xdg
    monkeypatch.setattr(settings, "_account_home", lambda: "/acct")
    assert settings.read({"HOME": ""}).cache_dir == "/acct/.cache/rnnlab"
    monkeypatch.setattr(settings, "_account_home", lambda: "")
    got = settings.read({}).cache_dir
    assert os.path.dirname(got) == tempfile.gettempdir() and "rnnlab-cache-" in got


def test_a_variable_that_is_not_rnnlabs_is_warned_about():
    said = "RNNLAB_THREADS is not one of rnnlab's variables and is ignored .did you mean "
    with pytest.warns(UserWarning, match=said + "RNNLAB_NUM_THREADS"):
        got = settings.read({"RNNLAB_THREADS": "1"})
    assert got.num_threads is None
    with pytest.warns(UserWarning, match="they are RNNLAB_BLAS, "):
        settings.read({"RNNLAB_ZZZZZZZZZZZZZZ": "1"})
    assert set(settings.VARIABLES) == {
        "RNNLAB_" + f.name.upper() for f in dataclasses.fields(settings.Settings)
    }  # every setting has its variable, and no variable is listed that none reads


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("RNNLAB_BLAS", "openblas", "'auto', 'mkl' or 'numpy'"),
    ("RNNLAB_NUM_THREADS", "two", "a positive integer up to 1024"),
    ("RNNLAB_NUM_THREADS", "0", "a positive integer up to 1024"),
    ("RNNLAB_NUM_THREADS", "2000", "a positive integer up to 1024"),  # a typo, not a machine
    ("RNNLAB_NUM_THREADS", "\u00b2", "a positive integer up to 1024"),  # a digit int() refuses
    ("RNNLAB_MALLOC", "glibc", "'retain' or 'system'"),
    ("RNNLAB_VECTOR_WIDTH", "12", "'default', 'auto' or a power of two from 1 to 64"),
    ("RNNLAB_NO_NUMBA", "2", "1, 0, true, false, yes, no, on or off"),
    ("RNNLAB_PACKED", "never", "1, 0, true, false, yes, no, on or off"),
    ("RNNLAB_TILES", "maybe", "'auto', 'on' or 'off'"),
    ("RNNLAB_MPI_TIMEOUT", "-1", "a positive number of seconds"),
    ("RNNLAB_MPI_TIMEOUT", "inf", "a positive number of seconds"),
    ("RNNLAB_SPIN", "-1", "a number of seconds, 0 or more"),
    ("RNNLAB_SPIN", "nan", "a number of seconds, 0 or more"),
    ("RNNLAB_SPIN", "soon", "a number of seconds, 0 or more"),
    # a relative folder: a cache in each working directory, made without a word
    ("RNNLAB_CACHE_DIR", "cache", "an absolute path (~ is expanded)"),
    ("RNNLAB_CACHE_DIR", "~no-such-user-h79/c", "an absolute path (~ is expanded)"),
])  # fmt: skip
def test_a_bad_value_is_named_in_one_line(name, value, expected):
    with pytest.raises(ValueError) as caught:
        settings.read({name: value})
    assert str(caught.value) == f"`{name}` must be {expected}; got {value!r} instead."


def test_read_once_until_reloaded(monkeypatch):
    first = settings.current()
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "5")
    assert settings.current() is first  # not read again
    assert settings.reload().num_threads == 5
    assert settings.current().num_threads == 5


def test_an_override_holds_inside_its_block_only():
    before = settings.current()
    with settings.override(packed=False, num_threads=7) as inside:
        assert settings.current() is inside and not inside.packed and inside.threads == 7
    assert settings.current() is before


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        settings.current().blas = "numpy"  # type: ignore[misc]
