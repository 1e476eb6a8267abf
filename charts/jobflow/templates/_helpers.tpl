{{/* Names, labels and images shared by every template. */}}

{{- define "jobflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of a component's objects; call with (dict "root" $ "component" "receiver"). */}}
{{- define "jobflow.labels" -}}
{{ include "jobflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "jobflow.selectorLabels" -}}
app.kubernetes.io/name: jobflow
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
A component's image; call with (dict "root" $ "component" "receiver"). image.overrides names a
component's whole image reference (skaffold sets them to what it built).
*/}}
{{- define "jobflow.image" -}}
{{- $image := .root.Values.image -}}
{{- $name := printf "%s-%s:%s" $image.repository .component (default .root.Chart.AppVersion $image.tag) -}}
{{- if get $image.overrides .component -}}{{ get $image.overrides .component }}
{{- else if $image.registry -}}{{ printf "%s/%s" $image.registry $name }}{{- else -}}{{ $name }}{{- end -}}
{{- end -}}

{{/*
A service's Deployment and Service. Call with
(dict "root" $ "component" "receiver" "values" .Values.receiver "env" (list ...)).
Every service listens on all addresses of its pod, serves /healthz, /readyz and /metrics on
its port, and reads KAFKA_BOOTSTRAP_SERVERS; "env" adds the component's own variables, and
"secretFiles" (optional: dict "secret" NAME "path" DIR) mounts a Secret's keys as files.
*/}}
{{- define "jobflow.service" -}}
{{- $root := .root -}}
{{- $prefix := upper .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "jobflow.fullname" $root }}-{{ .component }}
  labels:
    {{- include "jobflow.labels" . | nindent 4 }}
spec:
  {{- if not (and .values.autoscaling .values.autoscaling.enabled) }}
  replicas: {{ .values.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "jobflow.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "jobflow.selectorLabels" . | nindent 8 }}
      {{- if eq (include "jobflow.metricsDiscovery" $root) "annotations" }}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .values.port | quote }}
        prometheus.io/path: /metrics
      {{- end }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "jobflow.image" . }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ .values.port }}
          env:
            - name: {{ $prefix }}_HOST
              value: "0.0.0.0"
            - name: {{ $prefix }}_PORT
              value: {{ .values.port | quote }}
            - name: KAFKA_BOOTSTRAP_SERVERS
              value: {{ $root.Values.kafka.bootstrapServers | quote }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- range $name, $value := .values.env }}
            - name: {{ $name }}
              value: {{ $value | quote }}
            {{- end }}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 5
            failureThreshold: 2
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          {{- with .secretFiles }}
          volumeMounts:
            - {name: credentials, mountPath: {{ .path }}, readOnly: true}
          {{- end }}
      {{- with .secretFiles }}
      volumes:
        - name: credentials
          secret:
            secretName: {{ .secret }}
            defaultMode: 0440
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "jobflow.fullname" $root }}-{{ .component }}
  labels:
    {{- include "jobflow.labels" . | nindent 4 }}
spec:
  selector:
    {{- include "jobflow.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .values.port }}
      targetPort: http
{{- end -}}

{{/* Where PostgreSQL is: the release's StatefulSet, or the external host. */}}
{{- define "jobflow.postgresHost" -}}
{{- if .Values.postgres.enabled -}}{{ include "jobflow.fullname" . }}-postgres{{- else -}}{{ .Values.postgres.host }}{{- end -}}
{{- end -}}


{{/*
How Prometheus finds the services: "serviceMonitor" (a ServiceMonitor for the Prometheus
Operator) or "annotations" (prometheus.io/* on the pods, for a Prometheus that discovers pods by
annotation). metrics.discovery "auto" picks the first when the cluster serves the
ServiceMonitor kind.
*/}}
{{- define "jobflow.metricsDiscovery" -}}
{{- $mode := .Values.metrics.discovery -}}
{{- if eq $mode "auto" -}}
{{- $mode = ternary "serviceMonitor" "annotations" (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") -}}
{{- end -}}
{{- $mode -}}
{{- end -}}

{{/* The services that serve /metrics on their "http" port. */}}
{{- define "jobflow.services" -}}
{{- list "receiver" "processor" "converter" "informer" | toJson -}}
{{- end -}}

{{/* Environment of `python -m jobflow smoke` against the release's services. */}}
{{- define "jobflow.smokeEnv" -}}
- name: SMOKE_RECEIVER_URL
  value: http://{{ include "jobflow.fullname" . }}-receiver:{{ .Values.receiver.port }}
- name: SMOKE_INFORMER_URL
  value: http://{{ include "jobflow.fullname" . }}-informer:{{ .Values.informer.port }}
- name: SMOKE_TIMEOUT_S
  value: {{ .Values.smokeTest.timeoutSeconds | quote }}
{{- end -}}

{{/* The port of a URL: its own, or its scheme's (http 80, https 443). */}}
{{- define "jobflow.urlPort" -}}
{{- $url := urlParse . -}}
{{- $hostAndPort := splitList ":" $url.host -}}
{{- if gt (len $hostAndPort) 1 -}}{{ last $hostAndPort }}{{- else -}}{{ ternary 443 80 (eq $url.scheme "https") }}{{- end -}}
{{- end -}}

{{/*
A Secret of generated credentials (keys username, password) named .name: made on install, then
never again. A Secret of that name found in the namespace (lookup), whether made by an earlier
install or by the user, is used as it is, so upgrades keep the password; helm keeps the Secret
on uninstall, since the database's data outlives the release. Call with
(dict "root" $ "component" "postgres" "name" "jobflow-postgres").
*/}}
{{- define "jobflow.credentialsSecret" -}}
{{- if not (lookup "v1" "Secret" .root.Release.Namespace .name) }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  labels:
    {{- include "jobflow.labels" . | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  username: {{ "jobflow" | b64enc }}
  password: {{ randAlphaNum 32 | b64enc }}
{{- end }}
{{- end -}}
