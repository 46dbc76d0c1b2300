#!/usr/bin/env bash
# Copies into DIR what a Dockerfile's build stage COPYs from the build context (the repository
# root), at the same paths:   .ci/docker-context.sh deploy/Dockerfile DIR
# Handles the plain forms the project uses: `COPY src... dest` without flags, dest relative to
# the WORKDIR; a dest ending in "/" is a directory.
set -euo pipefail
dockerfile=$1 dir=$2
in_build=0
while read -r instruction rest; do
  case "$instruction" in
    FROM) [[ "$rest" == *" AS build" ]] && in_build=1 || in_build=0 ;;
    COPY)
      (( in_build )) || continue
      [[ "$rest" == --* ]] && { echo "docker-context: COPY flags are not handled: COPY $rest" >&2; exit 1; }
      read -r -a words <<< "$rest"
      dest=${words[-1]}
      for src in "${words[@]:0:${#words[@]}-1}"; do
        if [[ "$dest" == */ ]]; then
          mkdir -p "$dir/$dest" && cp -r "$src" "$dir/$dest"
        else
          mkdir -p "$(dirname "$dir/$dest")" && cp -r "$src" "$dir/$dest"
        fi
      done
      ;;
  esac
done < "$dockerfile"
