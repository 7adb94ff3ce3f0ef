"""The file commands' and Ray's shared request loop (``lmscore_client.pipeline``): which
errors are the rows' and which end the run."""

from __future__ import annotations

import asyncio

import pytest

from lmscore_client import pipeline
from lmscore_client.errors import RequestTimeoutError


@pytest.mark.parametrize("rows_error", [True, False])
def test_a_504_given_up_on_is_the_rows_error_for_ray_and_the_end_of_a_file_run(
    rows_error: bool,
) -> None:
    class Slow:
        async def call(self, api_call: object) -> object:
            raise RequestTimeoutError("deadline passed", status=504)

    items = [pipeline.classify(1, b'{"text": "hello"}', "text", None)]
    opts = pipeline.Options(timeout_is_rows_error=rows_error)
    run = pipeline.score_items(Slow(), items, False, opts, pipeline.RunInfo())
    if rows_error:  # Ray: one slow request must not fail the block
        asyncio.run(run)
        assert items[0].error is not None and items[0].error["status"] == 504
    else:  # score-file, calibrate: stop, and --resume scores the rows
        with pytest.raises(pipeline.Fatal):
            asyncio.run(run)
        assert items[0].error is None
