"""The read API over the tables, in process, on a real SQLite database."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving_patterns.batch import job, storage
from serving_patterns.batch.api import create_app
from serving_patterns.batch.settings import ApiSettings, JobSettings

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "iris"
ROWS = [(5.1, 3.5, 1.4, 0.2), (5.1, None, 1.4, 0.2), (6.7, 3.0, 5.2, 2.3), (5.0, 3.4, 1.5, 0.2)]


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'batch.db'}"
    engine = storage.connect(url)
    storage.create_tables(engine)
    storage.add_items(engine, ROWS[:3])
    engine.dispose()
    return url


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with TestClient(create_app(ApiSettings(database_url=url))) as client:
        yield client


def run_job(url: str) -> job.RunReport:
    return job.run(JobSettings(database_url=url, model_dir=str(MODEL_DIR)))


def test_before_a_run_every_row_is_unpredicted(client: TestClient) -> None:
    response = client.get("/data/unpredicted")

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["rows"]] == [1, 2, 3]
    assert response.json()["rows"][0]["status"] is None
    assert client.get("/data/summary").json() == {
        "items": 3, "predicted": 0, "failed": 0, "unpredicted": 3
    }  # fmt: skip


def test_after_a_run_rows_are_predicted_or_failed_and_none_unpredicted(
    client: TestClient, url: str
) -> None:
    run_job(url)

    predicted = client.get("/data/predicted").json()["rows"]
    failed = client.get("/data/failed").json()["rows"]

    assert client.get("/data/unpredicted").json() == {"rows": [], "next_after": None}
    assert [(r["id"], r["label"]) for r in predicted] == [(1, "setosa"), (3, "virginica")]
    assert failed[0]["id"] == 2
    assert failed[0]["error"] == "sepal_width is NULL"
    assert failed[0]["features"]["sepal_width"] is None
    assert client.get("/data/summary").json() == {
        "items": 3, "predicted": 2, "failed": 1, "unpredicted": 0
    }  # fmt: skip


def test_data_pages_by_id(client: TestClient) -> None:
    first = client.get("/data/all", params={"limit": 2}).json()
    second = client.get("/data/all", params={"limit": 2, "after": first["next_after"]}).json()

    assert [r["id"] for r in first["rows"]] == [1, 2]
    assert first["next_after"] == 2
    assert [r["id"] for r in second["rows"]] == [3]
    assert second["next_after"] is None


def test_runs_lists_the_latest_first_with_their_outcome(client: TestClient, url: str) -> None:
    first, second = run_job(url), run_job(url)

    runs = client.get("/runs").json()

    assert [r["id"] for r in runs] == [second.run_id, first.run_id]
    assert runs[1]["status"] == "done"
    assert runs[1]["message"] == "2 rows scored, 1 rows failed"


def test_a_non_finite_value_shows_as_null(client: TestClient, url: str) -> None:
    engine = storage.connect(url)
    storage.add_items(engine, [(5.1, 3.5, float("inf"), 0.2)])
    engine.dispose()

    row = client.get("/data/all", params={"after": 3}).json()["rows"][0]

    assert row["features"]["petal_length"] is None


@pytest.mark.parametrize(
    ("path", "params", "problem"),
    [
        ("/data/everything", {}, "'all', 'predicted', 'unpredicted' or 'failed'"),
        ("/data/all", {"limit": 0}, "greater than or equal to 1"),
        ("/data/all", {"limit": 1001}, "less than or equal to 1000"),
        ("/data/all", {"after": 2**63}, "less than or equal to"),
        ("/data/all", {"after": "x"}, "valid integer"),
        ("/runs", {"limit": 101}, "less than or equal to 100"),
    ],
)
def test_bad_parameters_get_422_naming_the_problem(
    client: TestClient, path: str, params: dict[str, int | str], problem: str
) -> None:
    response = client.get(path, params=params)

    assert response.status_code == 422
    assert problem in response.text


def test_ready_and_503_when_the_database_is_gone(tmp_path: Path) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    (tmp_path / "gone.db").mkdir()
    app = create_app(ApiSettings(database_url=f"sqlite:///{tmp_path / 'gone.db'}"))
    with TestClient(app, raise_server_exceptions=False) as client:
        ready = client.get("/ready")
        data = client.get("/data/all")

    assert ready.status_code == 503
    assert "database not answering" in ready.json()["reasons"]["database"]
    assert data.status_code == 503
    assert data.headers["retry-after"] == "1"
