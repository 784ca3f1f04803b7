"""Settings come from the environment the Pulumi program and the local stack set."""

from francine.base.config import Settings


def test_variables_set_the_settings_with_their_types():
    s = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "proj", "FRANCINE_FIRESTORE_DATABASE": "db",
                           "FRANCINE_MAX_TASKS": "5", "FRANCINE_MAX_TASK_S": "2.5",
                           "FRANCINE_PRODUCE_TOPIC": "t", "FRANCINE_ADMISSION_LIMIT": ""})
    assert (s.project, s.database, s.max_tasks, s.max_task_s, s.produce_topic) == \
        ("proj", "db", 5, 2.5, "t")
    assert s.admission_limit == Settings().admission_limit  # empty means unset


def test_to_env_round_trips():
    s = Settings(project="p", max_upload_bytes=7, cache_dir="/x", produce_shards=3)
    assert Settings.from_env(s.to_env()) == s


def test_the_names_the_deployment_sets_are_read():
    """infra/francine_infra/stack.py sets these for every component."""
    env = {"GOOGLE_CLOUD_PROJECT": "p", "FRANCINE_RESOURCES_BUCKET": "r",
           "FRANCINE_PARTIALS_BUCKET": "pa", "FRANCINE_RESULTS_BUCKET": "re",
           "FRANCINE_EVENTS_TOPIC": "e", "FRANCINE_MAX_UPLOAD_BYTES": "9",
           "FRANCINE_BLOCK_TIMEOUT_S": "60"}
    s = Settings.from_env(env)
    assert (s.resources_bucket, s.partials_bucket, s.results_bucket, s.events_topic,
            s.max_upload_bytes, s.block_timeout_s) == ("r", "pa", "re", "e", 9, 60.0)


def test_the_local_stack_takes_the_callers_stall_and_timer_unless_told(monkeypatch):
    from francine.tools.local.stack import LOCAL_STALL_S, _told

    monkeypatch.delenv("FRANCINE_STALL_S", raising=False)
    assert _told(None, "FRANCINE_STALL_S", 300.0, LOCAL_STALL_S) == LOCAL_STALL_S
    monkeypatch.setenv("FRANCINE_STALL_S", "42")
    stall = Settings.from_env().stall_s
    assert _told(None, "FRANCINE_STALL_S", stall, LOCAL_STALL_S) == 42.0
    assert _told(5.0, "FRANCINE_STALL_S", stall, LOCAL_STALL_S) == 5.0  # an option wins
