#!/usr/bin/env bash
# Scans one container image with Trivy and writes, into --out:
#   trivy.json      the vulnerability and secret report (every package listed; the gate reads this)
#   trivy.sarif     SARIF 2.1.0 for code scanning
#   sbom.cdx.json   CycloneDX SBOM
#   sbom.spdx.json  SPDX SBOM
# The image is scanned once; the other three are converted from trivy.json, so
# every output describes the same scan under the same ignore file.
#
# It never decides pass or fail: findings are data (exit code 0), and any
# non-zero exit means the scan itself broke. Trivy's own exit code 1 is
# never read as "vulnerabilities found".
#
# Trivy runs with no configuration but this script's flags: every TRIVY_*
# variable is dropped (TRIVY_SEVERITY=LOW would otherwise hide what blocks),
# no trivy.yaml is read from the working directory (an empty --config is
# given), and every severity is listed; the gate decides what blocks.
#
# Usage: scan_image.sh --out DIR [--image-src remote|docker] [--insecure]
#                      [--cache-dir DIR] [--offline | --db-repository REPO]
#                      [--ignorefile FILE] IMAGE
# --db-repository downloads the DB from that OCI repository (a mirror, as in
# Trivy's air-gapped set-up) instead of Trivy's default ones.
# TRIVY names the trivy binary (default: trivy on PATH).
set -euo pipefail

die() {
  echo "scan_image: $*" >&2
  exit 2
}

out="" image="" image_src="remote" insecure=false cache_dir="" offline=false ignorefile="" db_repository=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --image-src) image_src="${2:?--image-src needs remote or docker}"; shift 2 ;;
    --insecure) insecure=true; shift ;;
    --cache-dir) cache_dir="${2:?--cache-dir needs a directory}"; shift 2 ;;
    --offline) offline=true; shift ;;
    --db-repository) db_repository="${2:?--db-repository needs a repository}"; shift 2 ;;
    --ignorefile) ignorefile="${2:?--ignorefile needs a file}"; shift 2 ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) [[ -z "$image" ]] || die "one image only (got $image and $1)"; image="$1"; shift ;;
  esac
done

[[ -n "$image" ]] || die "no image given"
[[ -n "$out" ]] || die "--out is required"
[[ "$image_src" == remote || "$image_src" == docker ]] || die "--image-src must be remote or docker, not $image_src"
trivy="${TRIVY:-trivy}"
while IFS= read -r name; do
  [[ "$name" == TRIVY_* ]] && unset "$name"
done < <(compgen -e)
command -v "$trivy" >/dev/null 2>&1 || die "trivy not found ($trivy); the scan stage installs the pinned version"
[[ -z "$ignorefile" || -f "$ignorefile" ]] || die "ignore file $ignorefile does not exist"
! $offline || [[ -z "$db_repository" ]] || die "--offline uses the DB already in the cache; it cannot download one from --db-repository"

common=()
[[ -n "$cache_dir" ]] && common+=(--cache-dir "$cache_dir")
[[ -n "$ignorefile" ]] && common+=(--ignorefile "$ignorefile")

scan=(image --format json --list-all-pkgs --scanners "vuln,secret" --show-suppressed
  --severity "UNKNOWN,LOW,MEDIUM,HIGH,CRITICAL"
  --image-src "$image_src" --exit-code 0 --no-progress --skip-version-check --disable-telemetry --timeout 15m)
if $offline; then
  # Offline means: the DB already in the cache is the only source of truth.
  db_dir="${cache_dir:-${XDG_CACHE_HOME:-$HOME/.cache}/trivy}/db"
  [[ -s "$db_dir/trivy.db" && -s "$db_dir/metadata.json" ]] || die "no Trivy DB in $db_dir: an offline scan needs one (the scan stage builds it from advisories/)"
  scan+=(--skip-db-update --skip-java-db-update --offline-scan)
fi
if [[ -n "$db_repository" ]]; then
  # The mirror is the only DB source; the Java DB (for jars) is not mirrored and not needed here.
  scan+=(--db-repository "$db_repository" --skip-java-db-update)
fi
$insecure && scan+=(--insecure)

mkdir -p "$out"
# An empty configuration: a trivy.yaml in the working directory is never read.
config="$out/trivy-config.yaml"
: > "$config"
common+=(--config "$config")
json="$out/trivy.json"
# A previous run's outputs must never be mistaken for this run's.
rm -f "$json" "$out/trivy.sarif" "$out/sbom.cdx.json" "$out/sbom.spdx.json"

echo "scan_image: scanning $image (source: $image_src)" >&2
status=0
"$trivy" "${scan[@]}" "${common[@]}" --output "$json.tmp" "$image" || status=$?
if [[ $status -ne 0 ]]; then
  rm -f "$json.tmp"
  die "trivy could not scan $image (exit $status; its log is above)"
fi
[[ -s "$json.tmp" ]] || die "trivy exited 0 but wrote no report for $image"
mv "$json.tmp" "$json"

convert() {
  local format="$1" dest="$2" status=0
  "$trivy" convert --format "$format" --exit-code 0 "${common[@]}" --output "$dest.tmp" "$json" || status=$?
  [[ $status -eq 0 && -s "$dest.tmp" ]] || { rm -f "$dest.tmp"; die "trivy convert --format $format failed (exit $status)"; }
  mv "$dest.tmp" "$dest"
}
convert sarif "$out/trivy.sarif"
convert cyclonedx "$out/sbom.cdx.json"
convert spdx-json "$out/sbom.spdx.json"
echo "scan_image: wrote trivy.json, trivy.sarif, sbom.cdx.json, sbom.spdx.json to $out" >&2
