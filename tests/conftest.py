import pytest

from video_fixtures import bigbuckbunny, videos  # noqa: F401  (session fixtures for tests/test_video_*.py)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Keep the tests' encodings and built default models out of the user's cache directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECOT_CACHE_DIR", str(tmp_path_factory.mktemp("recot-cache")))
        yield
