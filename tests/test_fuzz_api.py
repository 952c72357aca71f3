"""schemathesis against the live API: every operation, every check, a fixed seed, bounded examples.

Every answer must match the served OpenAPI document (status, content type, headers, body),
be no 5xx, refuse what the schema calls invalid and accept what it calls valid; the
stateful test follows the documented links (token -> status, record) in sequences, while a
dispatcher runs the submitted jobs, so records are seen in every state. The answers the
schema cannot predict: a well-formed URL outside the deployment's allowed prefixes
(schema-valid, refused with the documented 400 "URL not allowed"), and an
Idempotency-Key the fuzzer draws again for another request (the documented 422: the key
already made a job, state no schema holds, as a 409's conflict is).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from redis import Redis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from backend.core.settings import Settings
from tests.paths import COMMITTED_OPENAPI
from tests.servers import live_system

# Examples per operation beyond the coverage phase's own cases, and stateful sequences:
# about 500 requests in all, well under a minute on the 2-core development machine.
CONFIG = {"seed": 20260101, "generation": {"max-examples": 25}}
SEQUENCES = 25
STEPS_PER_SEQUENCE = 6

# A live system on a worker process, and hundreds of requests.
pytestmark = pytest.mark.slow

# The committed document, which test_openapi proves is the one the app serves: loading it
# here makes one test per operation at collection time, before any server runs.
schema = schemathesis.openapi.from_path(COMMITTED_OPENAPI, config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture(scope="module")
def fuzzed_api(redis_url, process_client, tmp_path_factory):
    """One live API and dispatcher for every test here: the jobs the fuzzer submits really run.

    They run on the worker process (see process_client: their failures' tracebacks must not
    be formatted in this process while Hypothesis draws). Their ends are not awaited: even-sum
    jobs each take a performance report (~0.7 s of the in-process scheduler), and
    test_png_fuzz already waits out every job it gets accepted.
    """
    Redis.from_url(redis_url).flushall()
    settings = Settings(
        redis_url=redis_url,
        dask_scheduler_address=process_client.scheduler.address,
        data_dir=tmp_path_factory.mktemp("fuzz"),
        even_sum_block_bytes=1024,
        shutdown_grace_s=1.0,  # jobs still running at the end are handed back, not awaited
        default_rate=0,  # the fuzzer is one client sending fast: the rate limit is tested elsewhere
    )
    with live_system(settings, process_client) as url:
        yield url


@pytest.mark.timeout(120)
@schema.parametrize()
# The server is meant to outlive the examples: it is what they probe.
@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_each_operation_matches_the_schema(case, fuzzed_api):
    response = case.call(base_url=fuzzed_api, timeout=30)
    case.validate_response(response, excluded_checks=not_applicable(response))


@pytest.mark.timeout(120)
def test_sequences_along_the_links_match_the_schema(fuzzed_api):
    class Sequences(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"base_url": fuzzed_api, "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=not_applicable(response),
                transport_kwargs=kwargs,
                recorder=self.recorder,
            )

    Sequences.run(
        settings=hypothesis_settings(
            max_examples=SEQUENCES, stateful_step_count=STEPS_PER_SEQUENCE, deadline=None, derandomize=True
        )
    )


def not_applicable(response) -> list:
    """Checks that do not apply to this answer: see the module's docstring."""
    if response.status_code == 400 and response.json().get("error", "").startswith("URL not allowed"):
        return [positive_data_acceptance]
    if response.status_code == 422 and "Idempotency-Key" in response.json().get("error", ""):
        return [positive_data_acceptance]
    return []
