{{/* Release-scoped name, at most 63 characters (a DNS label). */}}
{{- define "doc-server.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "doc-server.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "doc-server.labels" -}}
{{ include "doc-server.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- if .Values.image.digest }}
{{- /* A label value holds at most 63 characters: the digest's first 12 hex identify it. */}}
app.kubernetes.io/version: {{ printf "sha256-%s" (trunc 12 (trimPrefix "sha256:" .Values.image.digest)) | quote }}
{{- else }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | trunc 63 | quote }}
{{- end }}
{{- end -}}

{{- define "doc-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "doc-server.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is given (the exact image that was scanned), repository:tag otherwise. */}}
{{- define "doc-server.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The pod must outlive the preStop pause plus the server's drain, or the kubelet
kills requests mid-flight. Cross-field rules cannot live in the JSON schema.
*/}}
{{- define "doc-server.terminationGracePeriod" -}}
{{- $drain := add .Values.preStopSleepSeconds .Values.shutdownTimeoutSeconds -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $drain 10 -}}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $drain) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + shutdownTimeoutSeconds (%v), or in-flight requests are killed during shutdown" .Values.terminationGracePeriodSeconds $drain) -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* A cosign attestor of the admission policy for one public key (PEM). */}}
{{- define "doc-server.admissionKey" }}
        key:
          data: {{ . | quote }}
        # A key signs offline: there is no transparency log entry to check.
        ctlog:
          insecureIgnoreTlog: true
          insecureIgnoreSCT: true
{{- end }}

{{/* A keyless cosign attestor of the admission policy: any of these certificate identities (subject or subjectRegExp, and issuer). */}}
{{- define "doc-server.admissionKeyless" }}
        keyless:
          identities:
            {{- range . }}
            - issuer: {{ .issuer | quote }}
              {{- if .subject }}
              subject: {{ .subject | quote }}
              {{- else }}
              subjectRegExp: {{ .subjectRegExp | quote }}
              {{- end }}
            {{- end }}
{{- end }}
