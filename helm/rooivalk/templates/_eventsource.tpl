{{/*
The pod template of an EventSource or a Sensor (Argo Events' Template): (list $ component serviceAccount
resources). The controller makes the Deployment; these labels put its pods under the release's
NetworkPolicies.
*/}}
{{- define "rooivalk.argoEventsPodTemplate" -}}
{{- $ := index . 0 -}}
serviceAccountName: {{ index . 2 }}
metadata:
  labels:
    {{- include "rooivalk.componentLabels" (list $ (index . 1)) | nindent 4 }}
securityContext:
  {{- include "rooivalk.podSecurityContext" $ | nindent 2 }}
{{- with include "rooivalk.podExtras" $ }}
{{ . }}
{{- end }}
container:
  resources:
    {{- toYaml (index . 3) | nindent 4 }}
  securityContext:
    {{- include "rooivalk.containerSecurityContext" $ | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
volumes:
  - name: tmp
    emptyDir: {}
{{- end }}
