"""Configuration from `PIXELMILL_*` environment variables and an optional `.env` file.

Only URLs change between the embedded defaults and production: an unset database, broker or storage URL
means the small local thing under the data directory.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.faults import check_url, mask
from contract.params import EngineName, ImageFormatName

ENV_PREFIX = "PIXELMILL_"


def is_amqp(url: str) -> bool:
    """A RabbitMQ (AMQP) broker URL, as opposed to Redis."""
    return url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


class SettingsError(RuntimeError):
    """A setting is invalid; the message names the environment variable to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    data_dir: Path = Path("pixelmill-data")
    database_url: str | None = None  # default: sqlite:///<data_dir>/pixelmill.db (WAL)
    broker_url: str | None = None  # default: embedded Redis on a unix socket in the data dir
    storage_url: str | None = None  # default: file://<data_dir>/images

    model: str | None = None  # diffusers directory or hub id for submit without --model; default: the tiny model
    batch_size: int = Field(4, ge=1, le=64)  # items per message = one GPU batch
    image_format: ImageFormatName = "png"
    image_quality: int = Field(95, ge=1, le=100)  # webp/jpeg only

    max_attempts: int = Field(3, ge=1, le=100)
    lease_seconds: int = Field(900, ge=5)  # must exceed task_time_limit: a running batch never looks lost
    task_soft_time_limit: int = Field(540, ge=1)
    task_time_limit: int = Field(600, ge=2)
    visibility_timeout: int = Field(3600, ge=10)  # Redis redelivers unacked messages after this
    reconcile_interval: float = Field(30.0, gt=0)
    requeue_after: int = Field(120, ge=1)  # pending items, and queued items whose queue is empty, after this
    queued_timeout: int = Field(6 * 3600, ge=1)  # queued items are re-published after this regardless

    sqlite_busy_timeout: float = Field(30.0, gt=0)

    # Prompt filter: comma-separated sources, each `builtin` (contract/blocklists), a list file (category =
    # file name) or a directory of *.txt lists. Add yours after `builtin`, or leave it out to replace it.
    # Empty turns the prompt filter off (recorded on the job).
    prompt_blocklists: str = "builtin"

    # RabbitMQ cancels a consumer that holds a message longer than its server-side `consumer_timeout`
    # (30 min by default) and redelivers the message. Set this to the broker's value: a batch must end first.
    rabbitmq_consumer_timeout: int = Field(1800, ge=10)
    model_load_timeout: float = Field(600.0, gt=0)  # a worker child may take this long to load its model

    # S3-compatible storage (PIXELMILL_STORAGE_URL=s3://bucket/prefix). Credentials come from boto3's
    # standard chain (AWS_ACCESS_KEY_ID…, profiles, instance roles) and are never logged.
    s3_endpoint_url: str | None = None  # e.g. http://minio:9000, https://<account>.r2.cloudflarestorage.com
    s3_region: str | None = None  # R2: "auto"; MinIO: any, e.g. us-east-1
    s3_addressing_style: Literal["auto", "path", "virtual"] | None = None  # default: path with an endpoint URL
    s3_max_attempts: int = Field(6, ge=1, le=20)  # boto3 "standard" retry mode, first try included
    s3_conditional_writes: bool = True  # If-None-Match: * (AWS, MinIO, R2); off: HEAD before PUT (older Ceph)
    s3_presign_expires: int = Field(3600, ge=1, le=7 * 24 * 3600)
    upload_threads: int = Field(4, ge=1, le=64)  # encode + upload off the GPU's path; also the pool size

    # Image checks (recorded on each job at submit). The image checker is a directory of diffusers
    # StableDiffusionSafetyChecker weights (its preprocessor_config.json beside them or in ../feature_extractor),
    # `nudenet` (the AGPL-3.0 `pixelmill[nudenet]` extra), or `none`: running unchecked must be said explicitly.
    image_checker: str | None = None
    safety_shift: float = Field(0.0, ge=-1.0, le=1.0)  # added to each concept threshold; negative: stricter
    quarantine: str = "quarantine"  # key prefix for blocked images (never under jobs/), or `none`: not kept
    clip_model: str | None = None  # transformers CLIPModel directory: clip_score, shared with the checker
    aesthetic_head: str | None = None  # LAION aesthetic MLP weights (.pth/.safetensors) over CLIP embeddings
    gate: str = ""  # default quality gate, e.g. "clip_score>=28,sharpness>=50"; empty: none
    gate_mode: Literal["reroll", "best_of"] = "reroll"
    gate_attempts: int = Field(1, ge=1, le=16)  # candidates per item at most (reroll) or exactly (best_of)
    gate_rank: str | None = None  # score that orders candidates; default: the gate's first score
    # Diffusion engines (worker/engine): which one a worker runs, where TensorRT builds are shared, torch options.
    engine: EngineName = "auto"  # auto: TensorRT if the cache has a build, else torch
    engine_cache: Path | None = None  # default: <data_dir>/engines; may be shared storage for every worker
    torch_dtype: Literal["fp16", "bf16"] = "fp16"  # on CUDA; CPU always runs fp32
    torch_compile: bool = False  # torch.compile the UNet (and VAE decoder): slower start, faster batches
    torch_quant: Literal["none", "int8", "fp8"] = "none"  # torchao on the UNet; fp8 needs CUDA compute 8.9+
    # Provenance (worker/provenance.py): every image carries XMP with the IPTC digital source type; with a
    # certificate and key, each image also gets a signed C2PA manifest (c2pa-python, in the worker extra).
    c2pa_cert: Path | None = None  # PEM chain: the signing certificate first, then its intermediates/CA
    c2pa_key: Path | None = None  # PEM private key of the signing certificate
    c2pa_alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
    c2pa_tsa_url: str | None = None  # RFC 3161 time-stamp authority; unset: no timestamp (works offline)

    # The operator's safety floor, applied by every worker to every job whatever the job recorded (a job
    # written by an old or hostile producer cannot lower it). Prompt lists: re-checked on every claimed item
    # (same syntax as PIXELMILL_PROMPT_BLOCKLISTS; empty: no floor). Image checker: used for every image
    # (with the stricter of the job's and this worker's PIXELMILL_SAFETY_SHIFT). A job without any checker
    # runs only where PIXELMILL_POLICY_ALLOW_CHECKER_OFF is true.
    policy_prompt_lists: str = "builtin"
    policy_image_checker: str | None = None
    policy_allow_checker_off: bool = False

    # Submission (producer/submit.py). A message may carry several GPU batches: the worker cuts it into
    # batches of PIXELMILL_BATCH_SIZE and claims each on its own. Constraint: all of a message's batches must
    # finish within PIXELMILL_TASK_SOFT_TIME_LIMIT (items_per_message / batch_size batches per task); a message
    # cut short leaves its remaining items queued for the reconciler. Bigger messages: faster submit.
    items_per_message: int = Field(32, ge=1, le=1024)  # at least one batch: max(this, batch_size)
    # The scheduler (contract/scheduling.py): the ledger holds the backlog and the broker only a window per model
    # queue, SCHEDULER_WINDOW messages per live worker of the model less one (at least 1); one process at a time
    # (a lease in the ledger, taken over after min(SCHEDULER_LEASE, RECONCILE_INTERVAL - SCHEDULER_INTERVAL) s)
    # tops the windows up every SCHEDULER_INTERVAL s, choosing by fair share across tenants.
    scheduler_window: int = Field(1, ge=1, le=64)
    scheduler_interval: float = Field(0.5, gt=0, le=60)
    scheduler_lease: float = Field(10.0, gt=0)
    # Helper processes that run the prompt filter over a large submission's fresh prompts (producer/screening.py);
    # unset: one per core beyond the submitting process, at most 4; 0: in the submitting process only.
    submit_processes: int | None = Field(None, ge=0, le=64)
    # Catalogue caps (docs/catalogues.md, "Catalogue input"; producer.catalogue `Limits`): raise one if needed.
    catalogue_cell_bytes: int = Field(16 * 1024, ge=1)  # one CSV cell or JSON value
    catalogue_row_bytes: int = Field(1024 * 1024, ge=1)  # one JSONL line or CSV record
    catalogue_columns: int = Field(1000, ge=1)  # CSV header columns or fields of one JSON object
    prompt_bytes: int = Field(2048, ge=1)  # prompt and negative prompt after rendering, UTF-8
    job_max_items: int = Field(2_000_000, ge=1)  # rows x images_per_item in one job
    catalogue_max_problems: int = Field(1000, ge=1)  # problems collected before reading stops
    catalogue_quoted_lines: int = Field(10, ge=1)  # lines one quoted CSV cell may span (more: a stray quote)
    input_max_bytes: int = Field(30 * 1024 * 1024, ge=1)  # one photo or mask file of a photo row
    input_max_pixels: int = Field(4096 * 4096, ge=1)  # one photo or mask, read from its header before decoding
    # Brand LoRAs (producer/lora.py): a job's `lora` is a .safetensors file under this operator-set directory or
    # under the tenant's source roots, at most lora_max_bytes.
    lora_dir: Path | None = None
    lora_max_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    prompt_tokens: int = Field(77, ge=1)  # the text encoder's limit, for the truncation warning
    # The retire guard of catalogue runs (producer/catalogue_runs.py `RetireGuard`): a run that would retire more than
    # this percent of the catalogue's current entries is refused (`submit --allow-retire` / `--max-retire`);
    # retiring up to catalogue_retire_floor entries is always allowed (small catalogues).
    catalogue_max_retire: float = Field(10.0, ge=0, le=100)
    catalogue_retire_floor: int = Field(10, ge=0)
    # The front door (docs/message-v1.md, docs/http.md): the intake queue, events and webhooks, the HTTP API.
    intake_max_rows: int = Field(10_000, ge=1)  # inline `rows` in one v1 request; larger: use `source`
    # The intake consumer redelivers a request its process died on after this many seconds (Redis brokers).
    intake_visibility_timeout: int = Field(900, ge=2)
    # One intake message, in bytes, before it is decoded (issue 22, finding 9); the embedded broker refuses a
    # value over 1.5 times this at the socket (Redis `proto-max-bulk-len`), so a larger one never reaches the intake.
    intake_max_message_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    intake_max_depth: int = Field(32, ge=8, le=512)  # JSON nesting of one intake message, checked before decoding
    # How often the intake looks for tenants added since it started, to consume their intake queues.
    intake_tenant_refresh: float = Field(30.0, gt=0)
    dispatch_interval: float = Field(1.0, gt=0)  # seconds between outbox scans when nothing is due
    # A delivery being sent is left to its dispatcher this long; at least twice PIXELMILL_WEBHOOK_TIMEOUT, so an
    # attempt and the record of its outcome end before another dispatcher may take the delivery.
    dispatch_lease: float = Field(60.0, gt=0)
    # Webhooks are signed per Standard Webhooks with this secret (`whsec_` + base64 of 24-64 random bytes);
    # a request naming a webhook is rejected while it is unset.
    webhook_secret: str | None = None
    webhook_timeout: float = Field(10.0, gt=0)  # total deadline of one POST (connect to last byte); then retried
    webhook_backoff: float = Field(5.0, gt=0)  # first retry after about this, doubled per attempt, with jitter
    webhook_backoff_max: float = Field(3600.0, gt=0)  # the longest wait between two attempts
    webhook_retry_period: float = Field(24 * 3600.0, gt=0)  # then the delivery is dead-lettered (`pixelmill events`)
    webhook_allow_http: bool = False  # plain http:// webhooks to any allowed address (a private network)
    # The only way a webhook reaches a non-public address (loopback, private, link-local...): `host`, `host:port`,
    # `*.domain`, IP, `IP:port` or CIDR entries, comma-separated (contract/webhook_target.py).
    webhook_allow_hosts: str = ""
    webhook_workers: int = Field(4, ge=1, le=64)  # delivery threads of one dispatcher
    webhook_per_receiver: int = Field(2, ge=1)  # deliveries in flight to one receiver (host:port) at a time
    # HTTP API bearer tokens, `name:token,name:token`; none set: `pixelmill serve` listens on loopback only.
    api_tokens: str = ""
    http_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # request bodies above this, chunked too: 413
    # Slow clients (pixelmill/api/connections.py): a request head must arrive within http_header_timeout seconds
    # of the connection opening (or of the previous response), its body within http_body_timeout seconds of the
    # head; an idle keep-alive connection closes after http_keep_alive_timeout. Past http_max_connections a new
    # connection closes the oldest one that is idle or still sending its head, so /healthz keeps answering.
    http_header_timeout: float = Field(10.0, gt=0)
    http_body_timeout: float = Field(60.0, gt=0)
    http_keep_alive_timeout: int = Field(5, ge=1)
    http_max_connections: int = Field(512, ge=8)
    # The tenant the CLI and the Python API act as (contract/tenants.py): they run on the operator's host with
    # the ledger's credentials, so they are trusted to name it; HTTP callers are known by their token instead.
    tenant: str = "default"

    # Observability (contract/metrics.py, docs/operations.md "Metrics"): the Prometheus endpoint of a worker, the
    # intake and the dispatcher (0: none; the HTTP API serves /metrics on its own port), where it listens, the
    # bearer token the HTTP API's /metrics asks for (empty: none), the prefork worker's multiprocess directory
    # (empty: a fresh temporary one per worker; emptied at start either way), and the log format (`kv`: key=value
    # lines; `json`: one JSON object per line, with job, item, tenant and trace ids as fields).
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_token: str = ""
    metrics_dir: str = ""
    log_format: Literal["kv", "json"] = "kv"

    # Receipts for nightly runs (pixelmill/cli/job_control.py, reports.py, waiting.py). A worker's heartbeat (its
    # reconciler tick, every PIXELMILL_RECONCILE_INTERVAL s) older than this means nobody serves its model's queue any
    # more: `status` and `jobs` say so, and `submit` warns. Drift (`pixelmill drift`, `submit --wait --fail-on-drift`)
    # flags a run whose median score fell by more than DRIFT_SCORE_DROP (relative: 0.1 = 10 %) or whose blocked or
    # failed rate rose by more than DRIFT_RATE_RISE (absolute: 0.05 = 5 points), each against the median of up to
    # DRIFT_RUNS earlier runs of the same catalogue.
    worker_stale_after: float = Field(90.0, gt=0)
    drift_score_drop: float = Field(0.1, ge=0, le=1)
    drift_rate_rise: float = Field(0.05, ge=0, le=1)
    drift_runs: int = Field(7, ge=1, le=100)

    # Hardening (contract/faults.py): an infrastructure failure (storage, database or broker unreachable or
    # timing out) gives its attempt back and is retried after an exponential, jittered delay (the item's
    # `not_before`, honoured by the reconciler) until the item has been failing that way for
    # INFRA_RETRY_BUDGET seconds; after that such failures count like any other. Temp files of interrupted
    # local stores older than TEMP_GRACE seconds are removed at worker start and by the reconciler.
    infra_retry_budget: float = Field(3600.0, ge=0)
    infra_retry_base: float = Field(2.0, gt=0)  # first delay; each later one is about the outage so far
    infra_retry_max_delay: float = Field(300.0, gt=0)
    temp_grace: float = Field(3600.0, ge=0)

    @field_validator("database_url", "broker_url", "storage_url")
    @classmethod
    def _url_shape(cls, value: str | None, info: object) -> str | None:
        return None if value is None or value == "" else check_url(getattr(info, "field_name", ""), value)

    @model_validator(mode="after")
    def _limits_fit_the_lease(self) -> Settings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("PIXELMILL_TASK_SOFT_TIME_LIMIT must be below PIXELMILL_TASK_TIME_LIMIT")
        if self.lease_seconds <= self.task_time_limit:
            raise ValueError(
                "PIXELMILL_LEASE_SECONDS must exceed PIXELMILL_TASK_TIME_LIMIT, "
                "or a batch still running would be handed to another worker"
            )
        if self.visibility_timeout <= self.lease_seconds:
            raise ValueError("PIXELMILL_VISIBILITY_TIMEOUT must exceed PIXELMILL_LEASE_SECONDS")
        if self.broker_url and is_amqp(self.broker_url) and self.rabbitmq_consumer_timeout <= self.task_time_limit:
            raise ValueError(
                "PIXELMILL_RABBITMQ_CONSUMER_TIMEOUT (the broker's consumer_timeout) must exceed "
                "PIXELMILL_TASK_TIME_LIMIT, or RabbitMQ redelivers batches still running"
            )
        if self.worker_stale_after <= self.reconcile_interval:
            raise ValueError(
                "PIXELMILL_WORKER_STALE_AFTER must exceed PIXELMILL_RECONCILE_INTERVAL (how often a "
                "worker sends its heartbeat), or live workers would look gone"
            )
        quarantine = self.quarantine.strip("/")
        if quarantine != "none" and (not quarantine or quarantine.split("/")[0] in ("jobs", "..", ".")):
            raise ValueError("PIXELMILL_QUARANTINE must be a key prefix outside jobs/ (the public images), or `none`")
        if (self.c2pa_cert is None) != (self.c2pa_key is None):
            raise ValueError(
                "PIXELMILL_C2PA_CERT and PIXELMILL_C2PA_KEY must be set together (a certificate chain "
                "and its private key) to sign C2PA manifests, or both left unset"
            )
        if self.webhook_secret is not None:
            _check_webhook_secret(self.webhook_secret)
        if self.dispatch_lease < 2 * self.webhook_timeout:
            raise ValueError(
                "PIXELMILL_DISPATCH_LEASE must be at least twice PIXELMILL_WEBHOOK_TIMEOUT, or another "
                "dispatcher could take a delivery while its attempt is still running and send it twice"
            )
        from contract.webhook_target import parse_hosts

        parse_hosts(self.webhook_allow_hosts)
        return self

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'pixelmill.db'}"

    @property
    def tiny_model_path(self) -> Path:
        return self.data_path / "models" / "tiny"

    @property
    def default_model(self) -> str:
        return self.model or str(self.tiny_model_path)

    @property
    def engine_cache_path(self) -> Path:
        return (self.engine_cache or self.data_path / "engines").expanduser().resolve()

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_path / "images").as_uri()


def _check_webhook_secret(secret: str) -> None:
    """`whsec_` + base64, as Standard Webhooks tools generate and verify it."""
    import base64
    import binascii

    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith("whsec_") or len(key) < 16:
        raise ValueError(
            "PIXELMILL_WEBHOOK_SECRET must be `whsec_` followed by base64 of at least 16 random "
            'bytes, e.g. python -c "import base64,os; '
            "print('whsec_'+base64.b64encode(os.urandom(32)).decode())\""
        )


ENV_FILE_VARIABLE = ENV_PREFIX + "ENV_FILE"


def env_file() -> Path | None:
    """The dotenv file the settings read: `./.env` unless PIXELMILL_ENV_FILE names another; empty means none
    (the test suite sets that, so a `.env` left by `pixelmill demo` in a checkout never reaches its processes)."""
    value = os.environ.get(ENV_FILE_VARIABLE, ".env")
    return Path(value) if value else None


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings(_env_file=env_file(), **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else "settings"
            msg = str(err["msg"]).removeprefix("Value error, ")
            secret = any(word in name for word in ("SECRET", "TOKEN", "PASSWORD"))  # never echoed
            got = f" (got {mask(repr(err['input']))})" if err["loc"] and name not in msg and not secret else ""
            lines.append(msg if msg.startswith(name) else f"{name}: {msg}{got}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
