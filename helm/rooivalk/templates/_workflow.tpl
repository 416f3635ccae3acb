{{/*
The Argo Workflow spec that submits the retraining pipeline to Kubeflow Pipelines: one container running
`rooivalk submit /etc/rooivalk/plan.yaml --pipeline retraining --param data_uri=...`. The Sensor (new
object, drift alert) and the CronWorkflow (schedule) both run it; its `data_uri` argument is the new
object's s3:// URI, or empty for the plan's own data.source.

Credentials: the ServiceAccount's API token, which Argo's executor needs to record the step's result
(its Role allows creating and patching workflowtaskresults, nothing else), and a projected token with
the audience pipelines.kubeflow.org, which kfp.Client sends to the KFP API (KF_PIPELINES_SA_TOKEN_PATH).
The API token is not kept from the main container with automountServiceAccountToken: false plus
executor.serviceAccountName: Argo would then need a long-lived token Secret for the executor
(<sa>.service-account-token), a worse trade than a short-lived bound token that can do this little.
*/}}
{{- define "rooivalk.submitWorkflowSpec" -}}
{{- $sa := include "rooivalk.componentName" (list . "submit") }}
{{- $submit := .Values.events.submit -}}
entrypoint: submit
serviceAccountName: {{ $sa }}
arguments:
  parameters:
    - name: data_uri
      value: ""
podMetadata:
  labels:
    {{- include "rooivalk.componentLabels" (list . "retraining") | nindent 4 }}
securityContext:
  {{- include "rooivalk.podSecurityContext" . | nindent 2 }}
{{- with include "rooivalk.podExtras" . }}
{{ . }}
{{- end }}
activeDeadlineSeconds: {{ $submit.activeDeadlineSeconds }}
ttlStrategy:
  secondsAfterCompletion: {{ $submit.ttlSecondsAfterFinished }}
podGC:
  strategy: OnPodSuccess
volumes:
  {{- include "rooivalk.planVolume" . | nindent 2 }}
  - name: tmp
    emptyDir: {}
  - name: kfp-token
    projected:
      sources:
        - serviceAccountToken:
            audience: pipelines.kubeflow.org
            expirationSeconds: 3600
            path: token
templates:
  - name: submit
    inputs:
      parameters:
        - name: data_uri
    {{- if $submit.retries }}
    # A submission that failed before the run started (KFP unreachable) is tried again.
    retryStrategy:
      limit: {{ $submit.retries | quote }}
      retryPolicy: OnFailure
      backoff:
        duration: 30s
        factor: "2"
    {{- end }}
    container:
      image: {{ include "rooivalk.image" (list . .Values.image) }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: [rooivalk]
      args:
        - submit
        - /etc/rooivalk/plan.yaml
        - --host
        - {{ .Values.kfp.host | quote }}
        {{- with .Values.kfp.namespace }}
        - --namespace
        - {{ . | quote }}
        {{- end }}
        - --experiment
        - {{ .Values.kfp.experiment | quote }}
        - --pipeline
        - retraining
        {{- if .Values.mlflow.enabled }}
        - --tracking-uri
        - {{ include "rooivalk.mlflowUrl" . | quote }}
        {{- end }}
        - --param
        - data_uri={{ "{{inputs.parameters.data_uri}}" }}
      env:
        - name: KF_PIPELINES_SA_TOKEN_PATH
          value: /var/run/secrets/kubeflow/pipelines/token
      resources:
        {{- toYaml $submit.resources | nindent 8 }}
      securityContext:
        {{- include "rooivalk.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: plan
          mountPath: /etc/rooivalk
          readOnly: true
        - name: tmp
          mountPath: /tmp
        - name: kfp-token
          mountPath: /var/run/secrets/kubeflow/pipelines
          readOnly: true
{{- end }}

{{/*
A Workflow object that submits retraining, for the Sensor's triggers: (list $ "drift").
*/}}
{{- define "rooivalk.retrainingWorkflow" -}}
{{- $ := index . 0 -}}
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: {{ include "rooivalk.componentName" (list $ (printf "retrain-%s" (index . 1))) }}-
  labels:
    {{- include "rooivalk.componentLabels" (list $ "retraining") | nindent 4 }}
spec:
  {{- include "rooivalk.submitWorkflowSpec" $ | nindent 2 }}
{{- end }}
