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
"secretFiles" (optional: a list of dict "secret" NAME "path" DIR) mounts Secrets' keys as files.
With kafkaAuth, a Kafka user among them (files/kafka-users.yaml) logs in as its KafkaUser.
*/}}
{{- define "jobflow.service" -}}
{{- $root := .root -}}
{{- $prefix := upper .component -}}
{{- $env := .env | default list -}}
{{- $secretFiles := .secretFiles | default list -}}
{{- if include "jobflow.kafkaUser" . -}}
{{- $env = concat $env (include "jobflow.kafkaAuthEnv" . | fromYamlArray) -}}
{{- $secretFiles = concat $secretFiles (include "jobflow.kafkaAuthSecrets" . | fromYamlArray) -}}
{{- end -}}
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
              value: {{ include "jobflow.kafkaBootstrap" $root | quote }}
            {{- with $env }}
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
          {{- with $root.Values.preStopSleepSeconds }}
          # A stopping pod leaves its Service's endpoints, and kube-proxy's rules, a moment after
          # it is told to stop: it keeps serving that long, so no new connection meets a closed
          # port (a rolling upgrade under load failed 18 of 1,194 requests without it).
          lifecycle:
            preStop:
              sleep:
                seconds: {{ . }}
          {{- end }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          {{- with $secretFiles }}
          volumeMounts:
            {{- range $index, $files := . }}
            - {name: secret-{{ $index }}, mountPath: {{ $files.path }}, readOnly: true}
            {{- end }}
          {{- end }}
      {{- with $secretFiles }}
      volumes:
        {{- range $index, $files := . }}
        - name: secret-{{ $index }}
          secret:
            secretName: {{ $files.secret }}
            defaultMode: 0440
        {{- end }}
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


{{/* A store's migrations (files/<store>/migrations/NNNN_name.sql, in order) as one text, each
after a line "-- migration: <file>": what the apply command reads (jobflow.schema.migrations). */}}
{{- define "jobflow.migrations" -}}
{{- range $path, $_ := .root.Files.Glob (printf "files/%s/migrations/*.sql" .store) }}
{{- printf "-- migration: %s\n%s\n" (base $path) ($.root.Files.Get $path | trim) }}
{{- end }}
{{- end }}

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

{{/* The services that serve /metrics on their "http" port: the pipeline services of
services/jobflow/components.py, which tests/kube/test_chart.py checks this against. */}}
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

{{/* The bootstrap address the Kafka clients use: kafkaAuth's listener, or the plain one. */}}
{{- define "jobflow.kafkaBootstrap" -}}
{{- if .Values.kafkaAuth.enabled -}}{{ .Values.kafkaAuth.bootstrapServers }}{{- else -}}{{ .Values.kafka.bootstrapServers }}{{- end -}}
{{- end -}}

{{/* With kafkaAuth, the KafkaUser a component logs in as ("" when it has none); call with
(dict "root" $ "component" "processor"). The users are files/kafka-users.yaml's. */}}
{{- define "jobflow.kafkaUser" -}}
{{- if and .root.Values.kafkaAuth.enabled (hasKey (.root.Files.Get "files/kafka-users.yaml" | fromYaml).users .component) -}}
{{ include "jobflow.fullname" .root }}-{{ .component }}
{{- end -}}
{{- end -}}

{{/* Where a Kafka user's password (the Secret Strimzi's User Operator makes, named after the
KafkaUser) and the cluster CA's certificate are mounted, and the variables that say so. */}}
{{- define "jobflow.kafkaAuthSecrets" -}}
- {secret: {{ include "jobflow.kafkaUser" . }}, path: /run/secrets/kafka-user}
- {secret: {{ .root.Values.kafka.clusterName }}-cluster-ca-cert, path: /run/secrets/kafka-ca}
{{- end -}}

{{- define "jobflow.kafkaAuthEnv" -}}
- {name: KAFKA_SECURITY_PROTOCOL, value: SASL_SSL}
- {name: KAFKA_SASL_MECHANISM, value: SCRAM-SHA-512}
- {name: KAFKA_SASL_USERNAME, value: {{ include "jobflow.kafkaUser" . }}}
- {name: KAFKA_SASL_PASSWORD_FILE, value: /run/secrets/kafka-user/password}
- {name: KAFKA_SSL_CA_LOCATION, value: /run/secrets/kafka-ca/ca.crt}
{{- end -}}

{{/* "true" when Kafka Connect is the chart's Strimzi KafkaConnect, "" when it is the user's
(connect.external.url). Without Strimzi it must be the user's. */}}
{{- define "jobflow.strimziConnect" -}}
{{- if not .Values.connect.external.url -}}
{{- if not .Values.kafka.strimzi.enabled -}}
{{- fail "kafka.strimzi.enabled false needs connect.external.url: the REST API of a Kafka Connect of your own, since the chart's Kafka Connect is a Strimzi KafkaConnect" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* The PostgreSQL address and the credentials' files (the mounted credentials Secret, at
/run/secrets/postgres), as PostgresSettings reads them: a list of variables. */}}
{{- define "jobflow.postgresEnv" -}}
- {name: POSTGRES_HOST, value: {{ include "jobflow.postgresHost" . | quote }}}
- {name: POSTGRES_PORT, value: {{ .Values.postgres.port | quote }}}
- {name: POSTGRES_DATABASE, value: {{ .Values.postgres.database | quote }}}
- {name: POSTGRES_USER_FILE, value: /run/secrets/postgres/username}
- {name: POSTGRES_PASSWORD_FILE, value: /run/secrets/postgres/password}
{{- end -}}

{{/*
A Helm hook Job running `python -m jobflow <component>` in the operator's image, once (its
command retries within its own timeout). Call with (dict "root" $ "component" "topics" "hook"
"pre-install,pre-upgrade" "weight" 0 "values" .Values.kafka.topicsJob "env" (list ...) "volumes"
(list (dict "name" "topics" "path" "/etc/jobflow" "configMap" NAME) ...)); a volume has a
configMap or a secret. It is deleted when it succeeds (hook resources outlive an uninstall
otherwise) and kept with its log when it fails, until the next run replaces it.
*/}}
{{- define "jobflow.hookJob" -}}
{{- $root := .root -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "jobflow.fullname" $root }}-{{ .component }}
  labels:
    {{- include "jobflow.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: {{ .hook }}
    helm.sh/hook-weight: {{ .weight | quote }}
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: 0
  # The command gives up after its own timeout; this bounds a pod that never starts it.
  activeDeadlineSeconds: {{ add .values.timeoutSeconds 120 }}
  template:
    metadata:
      labels:
        {{- include "jobflow.selectorLabels" . | nindent 8 }}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "jobflow.image" (dict "root" $root "component" "operator") }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["python", "-m", "jobflow", {{ .component | quote }}]
          env:
            {{- toYaml .env | nindent 12 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            {{- range .volumes }}
            - {name: {{ .name }}, mountPath: {{ .path }}, readOnly: true}
            {{- end }}
      volumes:
        {{- range .volumes }}
        - name: {{ .name }}
          {{- if .configMap }}
          configMap: {name: {{ .configMap }}}
          {{- else }}
          secret: {secretName: {{ .secret }}, defaultMode: 0440}
          {{- end }}
        {{- end }}
{{- end -}}
