{{/*
The retraining Job the monitoring job launches (see monitoring.yaml): `modelloop train --config ...`.
The launcher (modelloop/deploy/kubernetes/retrain_job.py, KubernetesJobRetrainer) keeps generateName, replaces the volume
`training-config` (mounted at /etc/modelloop/training, where --config points) with a ConfigMap holding the
serving version's training config (key config.yaml), and appends `--triggered-by <monitoring run id>`; the
tracking URI comes from the MLflow env below. Created by hand (`kubectl create -f`), the Job trains with
retraining.config. The volume name, mount path and file name must stay as they are: the launcher's
CONFIG_VOLUME / CONFIG_DIR / CONFIG_KEY (tests/integration/helm/test_retrain_job_chart.py checks it).
*/}}
{{- define "modelloop.retrainJob" -}}
apiVersion: batch/v1
kind: Job
metadata:
  generateName: {{ include "modelloop.fullname" . }}-retrain-
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "modelloop.labels" (dict "root" . "component" "training") | nindent 4 }}
spec:
  backoffLimit: {{ .Values.retraining.backoffLimit }}
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
          env:
            {{- include "modelloop.mlflowClientEnv" . | nindent 12 }}
            - name: MODELLOOP_PREDICTION_LOG_URL
              valueFrom:
                secretKeyRef:
                  name: {{ include "modelloop.predictionLogSecret" . }}
                  key: url
          resources:
            {{- toYaml .Values.retraining.resources | nindent 12 }}
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
