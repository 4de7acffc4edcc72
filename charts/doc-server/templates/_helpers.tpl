{{/* Release-scoped name, at most 63 characters (a DNS label). */}}
{{- define "doc-server.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The stable release's name: this release's, or, for a canary, the release it
runs beside (canary.of). Its pods carry that release's instance label, so the
stable Service routes to them too.
*/}}
{{- define "doc-server.instance" -}}
{{- if .Values.canary.enabled -}}
{{- required "canary.of must name the stable release the canary runs beside" .Values.canary.of -}}
{{- else -}}
{{- .Release.Name -}}
{{- end -}}
{{- end -}}

{{/* The stable release's fullname (for a canary: the release it runs beside). */}}
{{- define "doc-server.stableFullname" -}}
{{- $release := include "doc-server.instance" . -}}
{{- if contains .Chart.Name $release -}}
{{- $release | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" $release .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The Deployment's name: the stable one, or <stable>-canary. */}}
{{- define "doc-server.workloadName" -}}
{{- if .Values.canary.enabled -}}
{{- printf "%s-canary" (include "doc-server.stableFullname" . | trunc 56 | trimSuffix "-") -}}
{{- else -}}
{{- include "doc-server.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* What the release's Service selects: stable and canary pods alike. */}}
{{- define "doc-server.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ include "doc-server.instance" . }}
{{- end -}}

{{/*
What a Deployment selects. The stable one keeps the selector it always had (a
Deployment's selector cannot change); the canary's adds its track, so the two
never count each other's pods.
*/}}
{{- define "doc-server.workloadSelectorLabels" -}}
{{ include "doc-server.selectorLabels" . }}
{{- if .Values.canary.enabled }}
doc-server.dev/track: canary
{{- end }}
{{- end -}}

{{- define "doc-server.labels" -}}
{{ include "doc-server.workloadSelectorLabels" . }}
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
{{- default (include "doc-server.stableFullname" .) .Values.serviceAccount.name -}}
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

{{/* The Service the smoke test asks: the release's own, or the canary's alone. */}}
{{- define "doc-server.smokeTestService" -}}
{{- if .Values.canary.enabled -}}
{{- include "doc-server.workloadName" . -}}
{{- else -}}
{{- include "doc-server.fullname" . -}}
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
