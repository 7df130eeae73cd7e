from video_fixtures import bigbuckbunny, videos  # noqa: F401  (session fixtures for tests/test_video_*.py)
