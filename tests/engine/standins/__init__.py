"""Stand-in `gcp` and `time` resource provider plugins for the real Pulumi engine.

No machine here reaches Google Cloud and pulumi-gcp's own provider cannot be built, so the engine
tier runs the program (infra/__main__.py) against these: gRPC ResourceProvider servers that the
engine starts like any installed plugin (`python -m tests.engine.standins.install PLUGINS_DIR`
puts them at exactly the versions the installed SDKs ask for). They behave like pulumi-gcp and
pulumiverse-time where the engine can see it: inputs checked against the SDK's own declarations,
replacements where Terraform's schema says ForceNew, ids and computed outputs in the providers'
formats, unknown outputs during preview, Google's errors on demand.

State lives only in Pulumi's state, like a real provider's. Two optional pieces of "Google" are
shared between provider processes (and so between stacks), through files under a lock:

- DICOM_BQ_STANDIN_CLOUD=path.json: the IAM bindings (scope, role, member) that IAM member
  resources add and remove, as Google's additive members do (common.read_bindings reads it);
- DICOM_BQ_STANDIN_FAULTS='[{"name": "<URN name>", "times": N}]': the first N creates of that
  resource fail with the error Google gives while IAM propagates; attempts are counted in
  DICOM_BQ_STANDIN_STATE_DIR (or beside the cloud file).

DICOM_BQ_STANDIN_PROJECTS='{"project-id": "number"}' sets project numbers; DICOM_BQ_STANDIN_SLEEP=real
makes time's Sleep really wait.
"""
