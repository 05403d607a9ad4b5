{{/*
Names and labels.
*/}}
{{- define "xpd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped base name; components are "<fullname>-<component>". */}}
{{- define "xpd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "xpd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* (dict "root" $ "component" "decode") -> "<fullname>-decode" */}}
{{- define "xpd.componentName" -}}
{{- printf "%s-%s" (include "xpd.fullname" .root) .component -}}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "router"). */}}
{{- define "xpd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xpd.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Pod template labels: selector labels and part-of (nothing that changes with the chart version). */}}
{{- define "xpd.podLabels" -}}
{{ include "xpd.selectorLabels" . }}
app.kubernetes.io/part-of: xpd
{{- end -}}

{{/* Every object's labels: (dict "root" $ "component" "router"); component may be "". */}}
{{- define "xpd.labels" -}}
helm.sh/chart: {{ include "xpd.chart" .root }}
app.kubernetes.io/name: {{ include "xpd.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
app.kubernetes.io/part-of: xpd
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "xpd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "xpd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "xpd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "xpd.controllerServiceAccountName" -}}
{{- include "xpd.componentName" (dict "root" . "component" "controller") -}}
{{- end -}}

{{- define "xpd.placementConfigMapName" -}}
{{- include "xpd.componentName" (dict "root" . "component" "placement") -}}
{{- end -}}

{{/* host:port of the controller's gRPC service, as ranks and routers dial it. */}}
{{- define "xpd.controllerAddress" -}}
{{- printf "%s.%s.svc.%s:%d" (include "xpd.componentName" (dict "root" . "component" "controller")) .Release.Namespace .Values.clusterDomain (int .Values.ports.grpc) -}}
{{- end -}}

{{/* host:port of the router Service. */}}
{{- define "xpd.routerAddress" -}}
{{- printf "%s.%s.svc.%s:%d" (include "xpd.componentName" (dict "root" . "component" "router")) .Release.Namespace .Values.clusterDomain (int .Values.ports.grpc) -}}
{{- end -}}

{{/* The --model directory inside containers. */}}
{{- define "xpd.modelPath" -}}
{{- if .Values.model.dir -}}
{{- printf "%s/%s" (.Values.model.mountPath | trimSuffix "/") .Values.model.dir -}}
{{- else -}}
{{- .Values.model.mountPath -}}
{{- end -}}
{{- end -}}

{{/*
Pod-level pieces shared by every workload.
*/}}

{{/* Pod annotations: (dict "root" $ "extra" .Values.router.podAnnotations). */}}
{{- define "xpd.podAnnotations" -}}
{{- $root := .root -}}
{{- $annotations := dict -}}
{{- if $root.Values.metrics.podAnnotations -}}
{{- $_ := set $annotations "prometheus.io/scrape" "true" -}}
{{- $_ := set $annotations "prometheus.io/port" (toString $root.Values.ports.metrics) -}}
{{- $_ := set $annotations "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- $annotations = merge (deepCopy (.extra | default dict)) $annotations -}}
{{- if $annotations -}}
annotations:
  {{- toYaml $annotations | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* The model volume (name "model"). */}}
{{- define "xpd.modelVolume" -}}
- name: model
{{- if eq .Values.model.source "dummy" }}
  emptyDir:
    sizeLimit: {{ .Values.model.dummy.sizeLimit }}
{{- else if eq .Values.model.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ required "model.pvc.claimName is required when model.source=pvc" .Values.model.pvc.claimName }}
    readOnly: true
{{- else if eq .Values.model.source "hostPath" }}
  hostPath:
    path: {{ required "model.hostPath.path is required when model.source=hostPath" .Values.model.hostPath.path }}
    type: {{ .Values.model.hostPath.type }}
{{- end }}
{{- end -}}

{{/* Mount of the model volume; read-only except for the dummy writer. */}}
{{- define "xpd.modelVolumeMount" -}}
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- if and (eq .Values.model.source "pvc") .Values.model.pvc.subPath }}
  subPath: {{ .Values.model.pvc.subPath }}
{{- end }}
{{- end -}}

{{/* Init container writing the dummy checkpoint (model.source=dummy only). */}}
{{- define "xpd.modelInitContainers" -}}
{{- if eq .Values.model.source "dummy" }}
initContainers:
  - name: dummy-model
    image: {{ include "xpd.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command:
      - /bin/sh
      - -c
      - |
        set -eu
        if [ -f "$XPD_MODEL_DIR/config.json" ]; then exit 0; fi
        exec xpd dummy-model --preset "$XPD_DUMMY_PRESET" --out "$XPD_MODEL_DIR" \
          --tokenizer /opt/xpd/tokenizer ${XPD_DUMMY_DTYPE:+--dtype "$XPD_DUMMY_DTYPE"}
    env:
      - name: XPD_MODEL_DIR
        value: {{ include "xpd.modelPath" . | quote }}
      - name: XPD_DUMMY_PRESET
        value: {{ .Values.model.dummy.preset | quote }}
      - name: XPD_DUMMY_DTYPE
        value: {{ .Values.model.dummy.dtype | quote }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: model
        mountPath: {{ .Values.model.mountPath }}
{{- end }}
{{- end -}}

{{/* gRPC health probes: (dict "root" $ "startup" .Values.decode.startupProbe); startup may be nil. */}}
{{- define "xpd.probes" -}}
{{- $root := .root -}}
{{- with .startup }}
startupProbe:
  grpc:
    port: {{ $root.Values.ports.grpc }}
  periodSeconds: {{ .periodSeconds }}
  failureThreshold: {{ .failureThreshold }}
  timeoutSeconds: {{ $root.Values.probes.readiness.timeoutSeconds }}
{{- end }}
readinessProbe:
  grpc:
    port: {{ $root.Values.ports.grpc }}
  periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ $root.Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
livenessProbe:
  grpc:
    port: {{ $root.Values.ports.grpc }}
  periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ $root.Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
{{- end -}}

{{- define "xpd.containerPorts" -}}
ports:
  - name: grpc
    containerPort: {{ .Values.ports.grpc }}
    protocol: TCP
  - name: metrics
    containerPort: {{ .Values.ports.metrics }}
    protocol: TCP
{{- end -}}

{{/* Service ports (grpc, metrics). */}}
{{- define "xpd.servicePorts" -}}
ports:
  - name: grpc
    port: {{ .Values.ports.grpc }}
    targetPort: grpc
    protocol: TCP
    appProtocol: kubernetes.io/h2c
  - name: metrics
    port: {{ .Values.ports.metrics }}
    targetPort: metrics
    protocol: TCP
    appProtocol: http
{{- end -}}

{{/* Scheduling fields of a pod: a component's values. */}}
{{- define "xpd.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* PodDisruptionBudget: (dict "root" $ "component" "router" "pdb" .Values.router.pdb). */}}
{{- define "xpd.pdb" -}}
{{- if .pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "xpd.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "xpd.labels" . | nindent 4 }}
spec:
  {{- if hasKey .pdb "minAvailable" }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "xpd.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
Prefill and decode ranks: a StatefulSet whose pod ordinal is the rank
(--rank), behind a headless Service that gives each rank a stable DNS name.
(dict "root" $ "component" "decode")
*/}}
{{- define "xpd.rankService" -}}
{{- $root := .root -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "xpd.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "xpd.labels" . | nindent 4 }}
spec:
  clusterIP: None
  # Ranks are reachable by name as soon as they have an IP: the controller,
  # not DNS, says which ranks are healthy.
  publishNotReadyAddresses: true
  selector:
    {{- include "xpd.selectorLabels" . | nindent 4 }}
  {{- include "xpd.servicePorts" $root | trim | nindent 2 }}
{{- end -}}

{{- define "xpd.rankStatefulSet" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $values := index $root.Values $component -}}
{{- $name := include "xpd.componentName" . -}}
{{- $hostNetwork := $root.Values.rdma.hostNetwork -}}
{{- $advertise := ternary "podIP" $root.Values.ranks.advertise $hostNetwork -}}
{{- /* Resources: the component's, plus GPUs and RDMA devices. */ -}}
{{- $resources := deepCopy ($values.resources | default dict) -}}
{{- $extra := dict -}}
{{- if gt (int $values.gpus) 0 -}}
{{- $_ := set $extra $root.Values.gpu.resourceName (int $values.gpus) -}}
{{- end -}}
{{- if $root.Values.rdma.enabled -}}
{{- $extra = merge $extra (deepCopy $root.Values.rdma.resources) -}}
{{- end -}}
{{- if $extra -}}
{{- $_ := set $resources "limits" (merge (deepCopy ($resources.limits | default dict)) $extra) -}}
{{- $_ := set $resources "requests" (merge (deepCopy ($resources.requests | default dict)) $extra) -}}
{{- end -}}
{{- $securityContext := deepCopy $root.Values.securityContext -}}
{{- if and $root.Values.rdma.enabled $root.Values.rdma.capabilities -}}
{{- $caps := deepCopy ($securityContext.capabilities | default dict) -}}
{{- $_ := set $caps "add" $root.Values.rdma.capabilities -}}
{{- $_ := set $securityContext "capabilities" $caps -}}
{{- end -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "xpd.labels" . | nindent 4 }}
spec:
  serviceName: {{ $name }}
  replicas: {{ $values.replicas }}
  podManagementPolicy: {{ $root.Values.ranks.podManagementPolicy }}
  selector:
    matchLabels:
      {{- include "xpd.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "xpd.podLabels" . | nindent 8 }}
      {{- with include "xpd.podAnnotations" (dict "root" $root "extra" $values.podAnnotations) | trim }}
      {{- . | nindent 6 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "xpd.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $hostNetwork }}
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      {{- end }}
      terminationGracePeriodSeconds: {{ $root.Values.ranks.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with include "xpd.scheduling" $values | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- if or $values.affinity (ne $values.antiAffinity "none") }}
      affinity:
        {{- if $values.affinity }}
        {{- toYaml $values.affinity | nindent 8 }}
        {{- else if eq $values.antiAffinity "hard" }}
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  {{- include "xpd.selectorLabels" . | nindent 18 }}
        {{- else }}
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "xpd.selectorLabels" . | nindent 20 }}
        {{- end }}
      {{- end }}
      {{- with include "xpd.modelInitContainers" $root | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      containers:
        - name: {{ $component }}
          image: {{ include "xpd.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          # The StatefulSet ordinal (the pod name's suffix) is the rank; the
          # rank binds bindHost and registers XPD_ADVERTISE_HOST:<grpc port>
          # with the controller (IPv6 addresses in brackets).
          command:
            - /bin/sh
            - -c
            - |
              set -eu
              name="${POD_NAME:-$HOSTNAME}"
              rank="${name##*-}"
              case "$rank" in
                ''|*[!0-9]*) echo "xpd: no StatefulSet ordinal in pod name '$name'" >&2; exit 2 ;;
              esac
              host="$XPD_ADVERTISE_HOST"
              case "$host" in
                *:*) host="[$host]" ;;
              esac
              exec "$0" "$@" --advertise-address "$host:{{ $root.Values.ports.grpc }}" --rank "$rank"
            - xpd-{{ $component }}
          args:
            - --host
            - {{ $root.Values.bindHost | quote }}
            - --model
            - {{ include "xpd.modelPath" $root | quote }}
            - --controller
            - {{ include "xpd.controllerAddress" $root | quote }}
            - --compute
            - {{ $root.Values.engine.compute | quote }}
            - --threads
            - {{ $values.threads | quote }}
            - --kv-tokens
            - {{ $values.kvTokens | quote }}
            {{- if hasKey $values "maxStepTokens" }}
            - --max-step-tokens
            - {{ $values.maxStepTokens | quote }}
            {{- end }}
            {{- if eq $component "decode" }}
            # All decode ranks form one expert-parallel group; each waits for
            # the whole group, so the pods must start in parallel.
            - --ep-size
            - {{ $values.replicas | quote }}
            {{- end }}
            - --port
            - {{ $root.Values.ports.grpc | quote }}
            - --metrics-port
            - {{ $root.Values.ports.metrics | quote }}
            {{- range $values.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: POD_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.podIP
            - name: XPD_ADVERTISE_HOST
              {{- if eq $advertise "podIP" }}
              value: "$(POD_IP)"
              {{- else }}
              value: "$(POD_NAME).{{ $name }}.$(POD_NAMESPACE).svc.{{ $root.Values.clusterDomain }}"
              {{- end }}
            {{- range $key, $value := $root.Values.nccl.env }}
            - name: {{ $key }}
              value: {{ $value | quote }}
            {{- end }}
            {{- with $values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "xpd.containerPorts" $root | trim | nindent 10 }}
          {{- include "xpd.probes" (dict "root" $root "startup" $values.startupProbe) | trim | nindent 10 }}
          resources:
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- toYaml $securityContext | nindent 12 }}
          volumeMounts:
            {{- include "xpd.modelVolumeMount" $root | trim | nindent 12 }}
            - name: dshm
              mountPath: /dev/shm
            - name: tmp
              mountPath: /tmp
      volumes:
        {{- include "xpd.modelVolume" $root | trim | nindent 8 }}
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $root.Values.ranks.shmSize }}
        - name: tmp
          emptyDir: {}
{{- end -}}
