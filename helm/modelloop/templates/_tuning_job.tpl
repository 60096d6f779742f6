{{/*
The tuning Job a retraining runs when the model's training config asks for `study.workers` > 1: an Indexed
Job, `parallelism` = `completions` = the worker count, each index a `modelloop train --tune-and-finish` pod on
the chart's PostgreSQL study (the prediction-log database; Optuna keeps its own tables there). Every pod adds
trials until the study holds exactly `study.n_trials` finished ones (a PostgreSQL advisory lock shares the
budget); a pod that sees the study full takes the study's finishing lock (a PostgreSQL advisory lock, released
by the database when its holder dies) and runs the finishing step (refit, baseline, gate, profile,
registration) unless the retraining's version exists; the other pods wait for the lock and then find the
version, so every pod that succeeds has seen the one version registered, even two pods of one index, and a pod
retried after registering registers nothing. A failed worker pod is retried by the Job (backoffLimit); its
running trial is failed by Optuna's heartbeat and re-run. The launcher
(modelloop/deploy/kubernetes/retrain_template.py) sets completions and parallelism from the config's
`study.workers`, and a study name per retraining (a re-run of the same retraining finds the study registered
and registers nothing). Rendered into ConfigMap <fullname>-retrain-job, key tuning-job.yaml (monitoring.yaml).
*/}}
{{- define "modelloop.tuningJob" -}}
{{- $workers := int .Values.tuning.workers -}}
apiVersion: batch/v1
kind: Job
metadata:
  generateName: {{ include "modelloop.fullname" . }}-tune-
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "modelloop.labels" (dict "root" . "component" "training") | nindent 4 }}
spec:
  completionMode: Indexed
  completions: {{ $workers }}
  parallelism: {{ $workers }}
  backoffLimit: {{ .Values.tuning.backoffLimit }}
  activeDeadlineSeconds: {{ .Values.retraining.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: {{ .Values.retraining.ttlSecondsAfterFinished }}
  template:
    metadata:
      labels:
        {{- include "modelloop.labels" (dict "root" . "component" "training") | nindent 8 }}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- include "modelloop.imagePullSecrets" . | nindent 6 }}
      securityContext:
        {{- include "modelloop.podSecurityContext" (dict "uid" .Values.runAsUser) | nindent 8 }}
      containers:
        - name: train
          image: {{ include "modelloop.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: ["python", "-m", "modelloop"]
          args:
            - train
            - --config
            - /etc/modelloop/training/config.yaml
            - --tune-and-finish
            - --set
            - study.storage=$(MODELLOOP_STUDY_STORAGE)
            - --set
            - study.workers={{ $workers }}
          env:
            {{- include "modelloop.mlflowClientEnv" . | nindent 12 }}
            - name: MODELLOOP_PREDICTION_LOG_URL
              valueFrom:
                secretKeyRef:
                  name: {{ include "modelloop.predictionLogSecret" . }}
                  key: url
            - name: MODELLOOP_STUDY_STORAGE
              valueFrom:
                secretKeyRef:
                  name: {{ include "modelloop.predictionLogSecret" . }}
                  key: url
          resources:
            {{- toYaml .Values.tuning.resources | nindent 12 }}
          securityContext:
            {{- include "modelloop.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: training-config
              mountPath: /etc/modelloop/training
              readOnly: true
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: training-config
          configMap:
            name: {{ include "modelloop.fullname" . }}-training-config
        - name: tmp
          emptyDir:
            sizeLimit: 4Gi
{{- end }}
