{{/*
The batch-scoring Job `modelloop score --on-kubernetes` launches (see batch-job.yaml): an Indexed Job, one index
per shard, each pod running `modelloop score ... --shards N` with its index from JOB_COMPLETION_INDEX (set by
Kubernetes for Indexed Jobs), scoring its share of the input (Parquet row groups g mod N, or the query rows in
the index's contiguous range of --shard-key, an index-friendly range condition) into its own part `<batch id>-<index>`; a retried pod overwrites that part, so a
failed shard retried by backoffLimit never duplicates rows. The launcher (modelloop/deploy/kubernetes/batch_job.py,
BatchJobTemplate) keeps generateName, sets completions = parallelism = N, and replaces the `score` container's
args after `score` with the command's own; the tracking URI comes from the MLflow env below. The container
name and the /data mount must stay as they are (tests/integration/helm/test_batch_job_chart.py checks it).
*/}}
{{- define "modelloop.batchJob" -}}
apiVersion: batch/v1
kind: Job
metadata:
  generateName: {{ include "modelloop.fullname" . }}-batch-
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "modelloop.labels" (dict "root" . "component" "batch") | nindent 4 }}
spec:
  completionMode: Indexed
  completions: 1
  parallelism: 1
  backoffLimit: {{ .Values.batch.backoffLimit }}
  activeDeadlineSeconds: {{ .Values.batch.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: {{ .Values.batch.ttlSecondsAfterFinished }}
  template:
    metadata:
      labels:
        {{- include "modelloop.labels" (dict "root" . "component" "batch") | nindent 8 }}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- include "modelloop.imagePullSecrets" . | nindent 6 }}
      securityContext:
        {{- include "modelloop.podSecurityContext" (dict "uid" .Values.runAsUser) | nindent 8 }}
      containers:
        - name: score
          image: {{ include "modelloop.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: ["python", "-m", "modelloop"]
          args:
            - score
            - --memory-budget
            - {{ .Values.batch.memoryBudget | quote }}
          env:
            {{- include "modelloop.mlflowClientEnv" . | nindent 12 }}
          resources:
            {{- toYaml .Values.batch.resources | nindent 12 }}
          securityContext:
            {{- include "modelloop.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if .Values.batch.dataClaimName }}
            - name: data
              mountPath: /data
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 4Gi
        {{- if .Values.batch.dataClaimName }}
        - name: data
          persistentVolumeClaim:
            claimName: {{ .Values.batch.dataClaimName }}
        {{- end }}
{{- end }}
