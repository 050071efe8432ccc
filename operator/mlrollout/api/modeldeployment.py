"""ModelDeployment: one model served in production, and the record of its rollouts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BeforeValidator, Field, StringConstraints, model_validator

from mlrollout.api.analysis import Forecast, MetricResult, Verdict
from mlrollout.api.common import QUANTITY_PATTERN as QUANTITY_PATTERN  # re-exported: validate.py names its words
from mlrollout.api.common import SHA256_PATTERN as SHA256_PATTERN
from mlrollout.api.common import (
    ApiModel,
    Condition,
    Duration,
    Label,
    LabelSelector,
    Line,
    Message,
    Name,
    PolicyRef,
    Quantity,
    Word,
    cel,
    cel_rules,
)
from mlrollout.api.evaluation import EvaluationStatus
from mlrollout.api.rolloutpolicy import STEPS_RULES, Margins, Step, check_steps
from mlrollout.api.uris import MODEL_URI_PATTERN, REGISTRY_URL_PATTERN, URI_PATTERN, is_registry

ModelUri = Annotated[str, StringConstraints(pattern=MODEL_URI_PATTERN, max_length=2048)]
ProfileUri = Annotated[str, StringConstraints(pattern=URI_PATTERN, max_length=2048)]
HttpUri = Annotated[str, StringConstraints(pattern=REGISTRY_URL_PATTERN, max_length=2048)]
VersionLabel = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=63)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]
SHA256_RULE = "sha256 is required unless the uri is a registered model (models:/...)"
CREDENTIALS_RULE = "credentials set secretRef, serviceAccountName or both"
REGISTRY_RULE = "a models:/ uri needs registry.uri, and registry is only for models:/ uris"


class SecretRef(ApiModel):
    """A Secret in the ModelDeployment's namespace."""

    name: Name = Field(description="Name of the Secret.")


class Credentials(ApiModel):
    """How the model-server pods authenticate to the model store (docs/sources.md)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(cel("has(self.secretRef) || has(self.serviceAccountName)", CREDENTIALS_RULE))
    }

    secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "A Secret whose keys are the store's standard environment variables (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL_S3, ...), given to this "
            "ModelDeployment's model-server pods and evaluation Jobs only; for gs:// its key key.json, a "
            "service-account key file, is "
            "also mounted and named by GOOGLE_APPLICATION_CREDENTIALS."
        ),
    )
    service_account_name: Name | None = Field(
        default=None,
        description=(
            "The ServiceAccount the model-server pods and evaluation Jobs run as, for web identity (EKS IRSA injects "
            "AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE into pods of an annotated ServiceAccount)."
        ),
    )

    @model_validator(mode="after")
    def _something(self) -> Credentials:
        if self.secret_ref is None and self.service_account_name is None:
            raise ValueError(CREDENTIALS_RULE)
        return self


def shared_credentials(named: Iterable[tuple[str, Credentials | None]]) -> Credentials | None:
    """The one credentials set of a pod that reads the models of several revisions (the evaluation Job):
    theirs when they agree or only one names any, None when none does. Two different sets raise
    ValueError naming them: a pod has one ServiceAccount, and two Secrets' keys (both AWS_ACCESS_KEY_ID,
    both key.json) would silently shadow each other, so one model would be read with the other's."""
    found = [(who, c) for who, c in named if c is not None]
    for who, c in found[1:]:
        if c != found[0][1]:
            first, theirs = found[0]
            raise ValueError(
                f"{first} and {who} read the model store with different credentials ({_said(theirs)} vs "
                f"{_said(c)}); one pod can hold only one set: give both revisions the same credentials"
            )
    return found[0][1] if found else None


def _said(c: Credentials) -> str:
    secret = [f"secretRef {c.secret_ref.name}"] if c.secret_ref else []
    account = [f"serviceAccountName {c.service_account_name}"] if c.service_account_name else []
    return ", ".join(secret + account)


class RegistryCredentials(ApiModel):
    """How the operator authenticates to the MLflow tracking server (docs/sources.md, "Registry credentials")."""

    secret_ref: SecretRef = Field(
        description=(
            "A Secret in the ModelDeployment's namespace with the MLflow client's standard variables as keys: "
            "MLFLOW_TRACKING_TOKEN (sent as a bearer token) or MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (HTTP basic). Read by the operator when it resolves the models:/ URI and "
            "sent only to the tracking server's own address."
        )
    )


class Registry(ApiModel):
    """The MLflow tracking server whose Model Registry holds a models:/ model."""

    uri: HttpUri = Field(
        description="Base URL of the MLflow tracking server, e.g. http://mlflow.mlops.svc:5000 (no user:password@)."
    )
    credentials: RegistryCredentials | None = Field(
        default=None,
        description="Credentials for a tracking server with authentication on; absent: it is called without.",
    )


class ModelSource(ApiModel):
    """Which model to serve, and how to prove it is the right bytes."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel("has(self.sha256) || self.uri.startsWith('models:/')", SHA256_RULE, ".sha256"),
            cel("has(self.registry) == self.uri.startsWith('models:/')", REGISTRY_RULE, ".registry"),
        )
    }

    name: Name = Field(description="Model name, as served on /v2/models/{name}.")
    version: VersionLabel | None = Field(
        default=None,
        description=(
            "Model version label (shown in status and metrics); absent: the registry's version for models:/ "
            "URIs, else the first 12 hex characters of sha256."
        ),
    )
    uri: ModelUri = Field(
        description=(
            "Where the model file is: http(s)://HOST[:PORT]/PATH, file:///PATH (in the serving image), "
            "pvc://CLAIM/PATH (PATH relative to the claim, no '.' or '..' segments, no %-escapes), "
            "s3://BUCKET/KEY, gs://BUCKET/OBJECT, or a registered model models:/NAME/VERSION or "
            "models:/NAME@ALIAS (resolved once, when the rollout starts)."
        )
    )
    sha256: Sha256 | None = Field(
        default=None,
        description=(
            "Expected sha256 of the model file (64 lowercase hex characters); checked before loading. "
            "Required except for models:/ URIs, whose digest is taken and pinned when they are resolved."
        ),
    )
    format: Literal["onnx"] = Field(default="onnx", description="Model format; only onnx today.")
    reference_profile: ProfileUri | None = Field(
        default=None,
        description="URI of the training-data profile (mlrollout profile) used to measure input drift.",
    )
    credentials: Credentials | None = Field(
        default=None,
        description="Credentials for the model store (s3://, gs://); absent: the pods' own (e.g. web identity).",
    )
    registry: Registry | None = Field(default=None, description="The model registry of a models:/ URI.")

    @model_validator(mode="after")
    def _coherent(self) -> ModelSource:
        registered = is_registry(self.uri)
        if self.sha256 is None and not registered:
            raise ValueError(SHA256_RULE)
        if (self.registry is not None) != registered:
            raise ValueError(REGISTRY_RULE)
        return self


class ResourceList(ApiModel):
    """CPU and memory amounts in Kubernetes quantity syntax."""

    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 500m or 2.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 512Mi.")


class Resources(ApiModel):
    """Resources of each pod of one kind (model server or gateway)."""

    requests: ResourceList | None = Field(default=None, description="Guaranteed resources.")
    limits: ResourceList | None = Field(default=None, description="Upper limits.")


class Batching(ApiModel):
    """Adaptive micro-batching of concurrent requests in the model server."""

    enabled: bool | None = Field(
        default=None, description="On, off, or absent for automatic (on when the batch dimension is dynamic)."
    )
    max_batch_size: int = Field(default=32, ge=1, le=1024, description="Most rows in one model run.")
    max_delay: Duration = Field(default="2ms", description="Longest a request waits for others to join.")


class Serving(ApiModel):
    """How the model server runs."""

    port: int = Field(default=8080, ge=1024, le=65535, description="Container port of the model server.")
    batching: Batching = Field(default_factory=Batching, description="Micro-batching settings.")
    request_timeout: Duration = Field(default="5s", description="Server-side limit for one inference.")
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, le=1024**3, description="Larger request bodies are refused (413)."
    )
    threads: int | None = Field(default=None, ge=1, le=64, description="onnxruntime intra-op threads.")


class StickyKey(ApiModel):
    """Keeps one client on one track (A/B measurement)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel("has(self.header) != has(self.jsonField)", "sticky sets exactly one of header, jsonField")
        )
    }

    header: str | None = Field(default=None, max_length=256, description="Request header holding the key.")
    json_field: str | None = Field(
        default=None, max_length=256, description="Top-level field of the JSON body holding the key."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> StickyKey:
        if (self.header is None) == (self.json_field is None):
            raise ValueError("sticky sets exactly one of header, jsonField")
        return self


STICKY_NEEDS_BUILTIN: Final = (
    "sticky needs traffic.provider builtin: only mlrollout's gateway pins a client's key to a track "
    "(Gateway API and Istio split by weight per request; docs/traffic.md)"
)
FALLBACK_NEEDS_BUILTIN: Final = (
    "fallbackPolicyRef needs traffic.provider builtin: only mlrollout's gateway applies a FallbackPolicy "
    "(docs/traffic.md); configure timeouts and retries in the Gateway or the mesh instead"
)


class Traffic(ApiModel):
    """How traffic reaches the tracks."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel(
                "!has(self.sticky) || !has(self.provider) || self.provider == 'builtin'",
                STICKY_NEEDS_BUILTIN,
                ".sticky",
            )
        )
    }

    provider: Literal["builtin", "gatewayAPI", "istio"] = Field(
        default="builtin",
        description="builtin: mlrollout's gateway; gatewayAPI: an HTTPRoute; istio: a VirtualService.",
    )
    sticky: StickyKey | None = Field(
        default=None, description="Route each key to one track consistently (provider builtin only)."
    )

    @model_validator(mode="after")
    def _sticky_needs_builtin(self) -> Traffic:
        if self.sticky is not None and self.provider != "builtin":
            raise ValueError(STICKY_NEEDS_BUILTIN)
        return self


class NetworkPeer(ApiModel):
    """Client pods admitted to the gateway, as a NetworkPolicy peer selects them."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel(
                "has(self.namespaceSelector) || has(self.podSelector)", "a client sets namespaceSelector or podSelector"
            )
        )
    }

    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces of the clients; {} is every namespace; absent: the ModelDeployment's own.",
    )
    pod_selector: LabelSelector | None = Field(
        default=None, description="Client pods within those namespaces; absent: every pod there."
    )

    @model_validator(mode="after")
    def _selects_something(self) -> NetworkPeer:
        if self.namespace_selector is None and self.pod_selector is None:
            raise ValueError("a client sets namespaceSelector or podSelector")
        return self


class NetworkIsolation(ApiModel):
    """Ingress NetworkPolicies for the ModelDeployment's pods (docs/operator.md, "Network policies")."""

    enabled: bool | None = Field(
        default=None,
        description="Create the NetworkPolicies; absent: the operator's default (off unless the chart turns it on).",
    )
    clients: list[NetworkPeer] | None = Field(
        default=None,
        max_length=16,
        description="Who may call the gateway (with gatewayAPI or istio: the model servers); absent: any source. "
        "Prometheus and this namespace's gateways (fallback backups) are always admitted.",
    )


AUTOSCALING_RANGE_RULE: Final = "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"
CPU_NEEDS_REQUEST: Final = (
    "autoscaling on metric cpu needs resources.requests.cpu: the HPA measures utilization as a share of the "
    "request, and without one it cannot scale (docs/operator.md, Autoscaling)"
)
AutoscalingMetric = Literal["cpu", "requestsPerSecond", "concurrency"]


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler for the stable track; the candidate follows its traffic share of it."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel("self.minReplicas <= self.maxReplicas", AUTOSCALING_RANGE_RULE, ".minReplicas")
        )
    }

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest stable pods the HPA keeps.")
    max_replicas: int = Field(ge=1, le=1000, description="Most stable pods the HPA may run.")
    metric: AutoscalingMetric = Field(
        description=(
            "cpu: average CPU utilization in percent of the pods' request (metrics-server); requestsPerSecond: "
            "inference requests per second per pod; concurrency: requests in flight per pod (both from the model "
            "servers' own series, served by prometheus-adapter; docs/operator.md, Autoscaling)."
        )
    )
    target: float = Field(
        gt=0,
        le=1_000_000,
        description="The per-pod value the HPA holds the metric at (cpu: percent of the request, 1 to 1000).",
    )

    @model_validator(mode="after")
    def _range(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(AUTOSCALING_RANGE_RULE)
        return self


GATEWAY_CPU_NEEDS_REQUEST: Final = (
    "gateway.autoscaling on metric cpu needs gateway.resources.requests.cpu: the HPA measures utilization as a "
    "share of the request, and without one it cannot scale (docs/operator.md, Autoscaling)"
)


class GatewayAutoscaling(Autoscaling):
    """A HorizontalPodAutoscaler for the gateway's Deployment (same rules as the stable track's)."""

    min_replicas: int = Field(default=1, ge=1, le=100, description="Fewest gateway pods the HPA keeps.")
    max_replicas: int = Field(ge=1, le=100, description="Most gateway pods the HPA may run.")
    metric: AutoscalingMetric = Field(
        description=(
            "cpu: average CPU utilization in percent of the gateway pods' request (gateway.resources.requests.cpu); "
            "requestsPerSecond: requests the gateway answers per second per pod; concurrency: requests in flight "
            "per gateway pod (both from the gateway's own series, served by prometheus-adapter; docs/operator.md, "
            "Autoscaling)."
        )
    )
    target: float = Field(
        gt=0,
        le=1_000_000,
        description="The per-pod value the HPA holds the metric at (cpu: percent of the request, 1 to 1000).",
    )


class GatewaySettings(ApiModel):
    """The built-in gateway of this ModelDeployment."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel(
                "!has(self.autoscaling) || self.autoscaling.metric != 'cpu' || (has(self.resources) "
                "&& has(self.resources.requests) && has(self.resources.requests.cpu))",
                GATEWAY_CPU_NEEDS_REQUEST,
                ".autoscaling",
            )
        )
    }

    replicas: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description=(
            "Gateway pods (ignored with autoscaling); absent: the operator's default (chart gatewayAutoscaling "
            "when set, else gatewayReplicas)."
        ),
    )
    autoscaling: GatewayAutoscaling | None = Field(
        default=None,
        description=(
            "Scale the gateway with an HPA instead of fixed replicas; absent: the operator's default (chart "
            "gatewayAutoscaling) unless replicas is set."
        ),
    )
    resources: Resources | None = Field(default=None, description="Resources of each gateway pod.")

    @model_validator(mode="after")
    def _cpu_needs_request(self) -> GatewaySettings:
        requests = self.resources.requests if self.resources else None
        if (
            self.autoscaling is not None
            and self.autoscaling.metric == "cpu"
            and (requests is None or requests.cpu is None)
        ):
            raise ValueError(GATEWAY_CPU_NEEDS_REQUEST)
        return self


class SloOverrides(ApiModel):
    """Tighter SLOs than the policy's (never looser)."""

    error_rate_max: float | None = Field(default=None, ge=0, le=1, description="Error-rate SLO.")
    latency_max_seconds: float | None = Field(default=None, gt=0, description="Latency-quantile SLO, seconds.")
    prediction_drift_max_psi: float | None = Field(default=None, gt=0, description="Prediction drift limit.")
    input_drift_max_psi: float | None = Field(default=None, gt=0, description="Input drift limit.")


class StrategyOverride(ApiModel):
    """Per-model changes to the policy; they may only make it stricter."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            *(cel(f"!has(self.steps) || ({r['rule']})", r["message"], r["fieldPath"]) for r in STEPS_RULES)
        )
    }

    steps: list[Step] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="Replacement steps: keep any shadow step, start no higher, jump no further, wait no less.",
    )
    alpha: float | None = Field(default=None, gt=0, le=0.2, description="A lower alpha than the policy's.")
    margins: Margins | None = Field(default=None, description="Smaller margins than the policy's.")
    slos: SloOverrides | None = Field(default=None, description="Tighter SLOs than the policy's.")

    @model_validator(mode="after")
    def _coherent(self) -> StrategyOverride:
        if self.steps is not None:
            check_steps(self.steps)
        return self


class ModelDeploymentSpec(ApiModel):
    """What to serve. Changing model, image, resources or serving starts a new rollout."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel(
                "!has(self.fallbackPolicyRef) || !has(self.traffic) || !has(self.traffic.provider) "
                "|| self.traffic.provider == 'builtin'",
                FALLBACK_NEEDS_BUILTIN,
                ".fallbackPolicyRef",
            ),
            cel(
                "!has(self.autoscaling) || self.autoscaling.metric != 'cpu' || (has(self.resources) "
                "&& has(self.resources.requests) && has(self.resources.requests.cpu))",
                CPU_NEEDS_REQUEST,
                ".autoscaling",
            ),
        )
    }

    model: ModelSource = Field(description="The model to serve.")
    image: str | None = Field(
        default=None, max_length=512, description="Serving image; absent means the operator's default."
    )
    replicas: int = Field(
        default=1, ge=1, le=100, description="Model-server pods per track (ignored with autoscaling)."
    )
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scale the stable track with an HPA instead of fixed replicas; the candidate follows its share.",
    )
    gateway: GatewaySettings = Field(default_factory=GatewaySettings, description="The built-in gateway.")
    resources: Resources | None = Field(default=None, description="Resources of each model-server pod.")
    serving: Serving = Field(default_factory=Serving, description="Model-server settings.")
    rollout_policy_ref: PolicyRef | None = Field(
        default=None, description="The RolloutPolicy to use; absent means chosen by selector, or the default."
    )
    fallback_policy_ref: PolicyRef | None = Field(
        default=None,
        description="The FallbackPolicy (provider builtin only); absent means chosen by selector, or the default.",
    )
    strategy: StrategyOverride | None = Field(
        default=None, description="Stricter-only overrides of the rollout policy."
    )
    paused: bool = Field(default=False, description="Freeze the rollout where it is.")
    traffic: Traffic = Field(default_factory=Traffic, description="How traffic reaches the tracks.")
    network_policy: NetworkIsolation = Field(
        default_factory=NetworkIsolation,
        description="Ingress NetworkPolicies: gateway from clients, model servers from the gateway and Prometheus.",
    )

    @model_validator(mode="after")
    def _fallback_needs_builtin(self) -> ModelDeploymentSpec:
        if self.fallback_policy_ref is not None and self.traffic.provider != "builtin":
            raise ValueError(FALLBACK_NEEDS_BUILTIN)
        scaling, requests = self.autoscaling, self.resources.requests if self.resources else None
        if scaling is not None and scaling.metric == "cpu" and (requests is None or requests.cpu is None):
            raise ValueError(CPU_NEEDS_REQUEST)
        return self


class RevisionStatus(ApiModel):
    """One deployed revision: the content-addressed identity of what runs."""

    revision: str = Field(max_length=64, description="Hash of the pod-affecting spec.")
    number: int = Field(ge=1, description="Sequence number, for `kubectl mlrollout undo --to-revision`.")
    model_version: str = Field(max_length=63, description="The model's version label.")
    model_uri: str = Field(max_length=2048, description="Where the model came from (the spec's URI).")
    sha256: str = Field(max_length=64, description="The model file's digest (for models:/ URIs: pinned at resolution).")
    resolved_uri: str | None = Field(
        default=None,
        max_length=2048,
        description="For models:/ URIs: the file the registry version resolved to, which the pods read.",
    )
    run_id: str | None = Field(default=None, max_length=64, description="For models:/ URIs: the MLflow run.")
    started_at: str | None = Field(default=None, description="When this revision was deployed (RFC 3339).")
    origin: Literal["spec", "undo"] | None = Field(
        default=None, description="spec: the spec asked for it; undo: `kubectl mlrollout undo` brought it back."
    )
    template: str | None = Field(
        default=None,
        max_length=16384,
        description="The pod-affecting spec of this revision as JSON, so `undo` can redeploy it.",
    )


class StepStatus(ApiModel):
    """Where the rollout is."""

    index: int = Field(ge=0, description="Index into the effective strategy's steps.")
    kind: str = Field(max_length=16, description="shadow, canary, pause, blueGreen or evaluate.")
    started_at: str = Field(description="When the step started (RFC 3339).")
    requests_at_start: int = Field(
        default=0, ge=0, description="Candidate requests counted when the step started (minRequests is per step)."
    )
    carried_in: dict[str, float] | None = Field(
        default=None,
        description=(
            "Evidence against the candidate carried into this step from earlier analysed steps, per e-value "
            "test (docs/analysis.md, 'Evidence across steps'); absent on the first analysed step."
        ),
    )
    carried_out: dict[str, float] | None = Field(
        default=None,
        description="What the next analysed step starts from, per e-value test, as of this step's latest look.",
    )
    passed: Message | None = Field(
        default=None,
        description="The last step passed (why) and the promotion waits for its confirmPromotion hooks.",
    )


class TrafficStatus(ApiModel):
    """The traffic split in force."""

    stable: int = Field(ge=0, le=100, description="Percent of live requests to stable.")
    candidate: int = Field(ge=0, le=100, description="Percent of live requests to the candidate.")
    mirror: int = Field(default=0, ge=0, le=100, description="Percent of requests mirrored to the candidate.")
    version: int = Field(default=0, ge=0, description="Route table version; increases with every change.")


class RoutingStatus(ApiModel):
    """The traffic provider, and what its implementation says about the route (docs/traffic.md)."""

    provider: Word = Field(description="builtin, gatewayAPI or istio: who routes the requests.")
    accepted: Literal["True", "False", "Unknown"] | None = Field(
        default=None,
        description="Gateway API: whether the Gateway's implementation accepted the HTTPRoute (status.parents); "
        "absent where the provider does not report it. No step passes unless True.",
    )
    message: Message | None = Field(default=None, description="The implementation's conditions, in one line.")
    mirror: Literal["percent", "full", "none"] | None = Field(
        default=None,
        description="What the implementation can mirror (from its GatewayClass' supportedFeatures); absent: not said.",
    )
    not_applied: list[Line] | None = Field(
        default=None, max_length=8, description="What this ModelDeployment asks that the provider cannot do."
    )


def _first(limit: int) -> Callable[[Any], Any]:
    """Keep the first ``limit`` items of a list the operator writes (the CRD allows no more)."""

    def first(value: Any) -> Any:
        return value[:limit] if isinstance(value, list) else value

    return first


Outcome = Literal["promoted", "rolledBack", "superseded", "aborted"]
"""How a rollout ended."""


class AnalysisStatus(ApiModel):
    """The last verdict and why."""

    time: str = Field(description="When the look was taken (RFC 3339).")
    verdict: Verdict = Field(description="The verdict.")
    reason: Message = Field(description="One line for humans.")
    alpha: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description=(
            "The policy's alpha: the chance of a false rollback over the whole rollout, every analysed step "
            "and look included (evidence is carried across steps, docs/analysis.md)."
        ),
    )
    metrics: Annotated[list[MetricResult] | None, BeforeValidator(_first(32))] = Field(
        default=None, max_length=32, description="Per-metric evidence (the first 32)."
    )
    source: Literal["gateway", "model"] | None = Field(
        default=None,
        description=(
            "Whose series the look read: gateway = the built-in gateway's (what clients see); model = the model "
            "servers' own (shadow and blue-green preview steps, and every step with traffic.provider gatewayAPI "
            "or istio, where the built-in gateway is not in the path)."
        ),
    )
    forecast: Forecast | None = Field(
        default=None,
        description="When a candidate like stable would pass this step's checks, at the traffic seen so far.",
    )


class HistoryEntry(ApiModel):
    """One past rollout."""

    revision: str = Field(max_length=64, description="Revision hash.")
    number: int = Field(ge=1, description="Revision sequence number.")
    model_version: str = Field(max_length=63, description="Model version label.")
    sha256: str = Field(max_length=64, description="Model digest.")
    resolved_uri: str | None = Field(
        default=None, max_length=2048, description="For models:/ URIs: the file the registry version resolved to."
    )
    run_id: str | None = Field(default=None, max_length=64, description="For models:/ URIs: the MLflow run.")
    started_at: str | None = Field(default=None, description="When the rollout started (RFC 3339).")
    finished_at: str | None = Field(default=None, description="When it ended (RFC 3339).")
    outcome: Outcome = Field(description="How it ended.")
    reason: Message = Field(default="", description="Why.")
    evaluation: Message | None = Field(default=None, description="The offline evaluation's verdict, if it had one.")


class CommandStatus(ApiModel):
    """The last human command (kubectl mlrollout ...) the operator acted on."""

    id: Label = Field(description="The command's id from the mlrollout.io/command annotation.")
    verb: Word = Field(description="promote, promoteFull, abort, pause, resume, retry or undo.")
    result: Literal["accepted", "refused"] = Field(description="Whether the operator carried it out.")
    message: Message = Field(default="", description="What happened, or why not.")
    time: str = Field(description="When the operator handled it (RFC 3339).")


class ScaleDownStatus(ApiModel):
    """A revision whose pods are kept for a while (drain, blue-green rollback window), then removed."""

    revision: str = Field(max_length=64, description="Revision hash.")
    at: str = Field(description="When its Deployment and Service are removed (RFC 3339).")
    reason: Line = Field(default="", description="Why it is going away.")


class HeldBackStatus(ApiModel):
    """The spec's revision that the operator will not roll out again until the spec changes or `retry`."""

    revision: str = Field(max_length=64, description="Revision hash.")
    number: int = Field(ge=1, description="Revision sequence number.")
    outcome: Literal["rolledBack", "aborted", "undone", "refused"] = Field(
        description="Why it is held back (refused: its models:/ URI could not be resolved)."
    )
    reason: Message = Field(default="", description="The reason, for humans.")
    time: str = Field(description="When (RFC 3339).")


class ResolvingStatus(ApiModel):
    """A spec revision whose models:/ URI the registry has not resolved yet (down, slow, still registering)."""

    revision: str = Field(max_length=64, description="Revision hash of the spec.")
    since: str = Field(description="When the first attempt failed (RFC 3339); progressDeadline counts from here.")
    reason: Message = Field(default="", description="The last attempt's error.")


class PromotingStatus(ApiModel):
    """A promotion that is decided and waits for the candidate's pods: with `spec.autoscaling` the candidate
    runs its traffic share of the stable's pods, so it is first scaled to the stable's count and promoted once
    that many are ready (or progressDeadline after `since`), so ready capacity never dips at the switch."""

    revision: str = Field(max_length=64, description="The candidate revision being promoted.")
    reason: Message = Field(default="", description="Why it is promoted (it goes into the history).")
    since: str = Field(description="When the promotion was decided (RFC 3339); progressDeadline counts from here.")


class AutoscalingStatus(ApiModel):
    """What an HPA says, the stable track's or the gateway's (copied each pass, so `kubectl get md -o yaml` and
    `kubectl mlrollout status` show it)."""

    target: str = Field(max_length=253, description="The Deployment the HPA scales (the stable revision's).")
    current_replicas: int | None = Field(default=None, ge=0, description="Pods the HPA last saw.")
    desired_replicas: int | None = Field(default=None, ge=0, description="Pods the HPA asks for.")
    scaling_active: Literal["True", "False", "Unknown"] = Field(
        default="Unknown",
        description="The HPA's ScalingActive condition: False when it cannot read its metric (replicas stay fixed).",
    )
    message: Message = Field(default="", description="The HPA's own words when it is not scaling.")


Phase = Literal["Pending", "Progressing", "Paused", "Healthy", "Degraded"]
"""Where a ModelDeployment is, in one word (status.phase)."""
PHASES: Final[tuple[Phase, ...]] = get_args(Phase)


class ApprovalStatus(ApiModel):
    """One approval hook's word on the candidate: asked until it approves; remembered for this revision."""

    hook: Name = Field(description="The policy's hook.")
    type: Word = Field(description="confirmRollout, preRollout or confirmPromotion.")
    revision: str = Field(max_length=64, description="The candidate revision it is about.")
    state: Literal["waiting", "approved"] = Field(description="waiting (asked again) or approved (not asked again).")
    since: str = Field(description="When the wait began (RFC 3339); maxWait counts from here.")
    time: str | None = Field(default=None, description="When the last answer came (RFC 3339).")
    message: Message | None = Field(default=None, description="The last answer, in words (never the URL).")


class ModelDeploymentStatus(ApiModel):
    """Written by the operator: everything needed to resume after a restart, and to explain."""

    observed_generation: int | None = Field(default=None, description="The generation last acted upon.")
    phase: Phase | None = Field(default=None, description="Where the ModelDeployment is, in one word.")
    message: Message | None = Field(default=None, description="One line for humans.")
    stable: RevisionStatus | None = Field(default=None, description="The revision serving live traffic.")
    candidate: RevisionStatus | None = Field(default=None, description="The revision being rolled out.")
    stable_version: str | None = Field(default=None, max_length=63, description="Stable model version.")
    candidate_version: str | None = Field(default=None, max_length=63, description="Candidate model version.")
    traffic_split: Word | None = Field(default=None, description="stable/candidate percents.")
    traffic: TrafficStatus | None = Field(default=None, description="The split in force.")
    routing: RoutingStatus | None = Field(
        default=None, description="Who routes, and what the routing implementation says."
    )
    current_step: StepStatus | None = Field(default=None, description="The step in progress.")
    last_analysis: AnalysisStatus | None = Field(default=None, description="The last verdict.")
    last_evaluation: EvaluationStatus | None = Field(
        default=None, description="The last offline evaluation (an evaluate step's Job and its verdict)."
    )
    history: list[HistoryEntry] | None = Field(default=None, max_length=50, description="Past rollouts.")
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=8,
        description=(
            "Available, Progressing, Degraded; ScalingActive with autoscaling, GatewayScalingActive with the "
            "gateway's HPA."
        ),
    )
    last_command: CommandStatus | None = Field(default=None, description="The last kubectl mlrollout command.")
    revisions: list[RevisionStatus] | None = Field(
        default=None, max_length=20, description="Known revisions with their templates (for undo)."
    )
    scale_downs: list[ScaleDownStatus] | None = Field(
        default=None, max_length=20, description="Revisions scheduled for removal."
    )
    held_back: HeldBackStatus | None = Field(
        default=None, description="The spec revision not rolled out (after a rollback, abort or undo)."
    )
    resolving: ResolvingStatus | None = Field(
        default=None, description="The spec's models:/ URI is being resolved (the registry did not answer yet)."
    )
    promoting: PromotingStatus | None = Field(
        default=None,
        description="A decided promotion waiting for the candidate's pods at the stable's count (spec.autoscaling).",
    )
    paused_by_command: bool | None = Field(default=None, description="Paused by `kubectl mlrollout pause`.")
    hold: Message | None = Field(
        default=None, description="Why the rollout holds for a human (policy onInconclusive/onFailure)."
    )
    policy: Line | None = Field(default=None, description="The rollout policy in force and its source.")
    autoscaling: AutoscalingStatus | None = Field(
        default=None, description="The stable track's HPA, when spec.autoscaling is set."
    )
    gateway_autoscaling: AutoscalingStatus | None = Field(
        default=None,
        description="The gateway's HPA (`<md>-gateway`), when the gateway autoscales (spec or operator default).",
    )
    approvals: list[ApprovalStatus] | None = Field(
        default=None, max_length=10, description="Approval hooks asked about the candidate, and their answers."
    )


class ModelDeployment(ApiModel):
    """ModelDeployment (short name md): a model served in production and rolled out safely."""

    api_version: Literal["mlrollout.io/v1alpha1"] = Field(
        default="mlrollout.io/v1alpha1", description="mlrollout.io/v1alpha1"
    )
    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="ModelDeployment")
    metadata: dict[str, object] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="What to serve and how to roll it out.")
    status: ModelDeploymentStatus | None = Field(default=None, description="Written by the operator.")
