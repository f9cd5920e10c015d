#!/usr/bin/env bash
# Prints users coming online and going offline, as pushgate reports them:
# WatchEvents over the HTTP/JSON API as server-sent events, with bash and curl.
#
# Usage: watch-events.sh [http-url [api-key]]; what is not given comes from
# PUSHGATE_HTTP_URL (default http://127.0.0.1:8080) and PUSHGATE_API_KEY
# (default none). Runs until interrupted; watches again when the stream ends
# (a pushgate restart, or RESOURCE_EXHAUSTED after falling behind), resuming
# after the last event it got (Last-Event-ID) where pushgate keeps cursors.
#
# An offline event comes --presence-grace (5 s by default) after a user's last
# connection closed, so a page reload reports nothing.
set -uo pipefail

URL=${1:-${PUSHGATE_HTTP_URL:-http://127.0.0.1:8080}}
API_KEY=${2:-${PUSHGATE_API_KEY:-}}

last_id=''     # the last event's id (its cursor), sent as Last-Event-ID
backoff_ms=200 # before watching again: doubling up to 5 s, reset once watching

# field NAME JSON: the value of the first field NAME in JSON, unquoted.
field() {
	sed -n 's/.*"'"$1"'":\("\([^"\\]\|\\.\)*"\|[^,}]*\).*/\1/p' <<<"$2" | sed 's/^"\(.*\)"$/\1/'
}

# watch: one WatchEvents call; returns when its stream ends. curl -i writes
# the answer's headers first: pushgate sends them once the watch is in place,
# so from "200" on nothing is missed.
watch() {
	local auth=()
	[[ -n $API_KEY ]] && auth=(-H "Authorization: Bearer $API_KEY")
	local resume=()
	[[ -n $last_id ]] && resume=(-H "Last-Event-ID: $last_id")
	local status='' line data
	while IFS= read -r line || [[ -n $line ]]; do
		line=${line%$'\r'}
		if [[ $line == 'curl: '* ]]; then # pushgate unreachable, or the stream cut
			echo "$line"
			continue
		fi
		if [[ -z $status ]]; then # the status line
			status=$(cut -d' ' -f2 <<<"$line")
			if [[ $status == 200 ]]; then
				backoff_ms=200
				echo "watching online/offline events"
			fi
			continue
		fi
		case $line in
		'id: '*) last_id=${line#id: } ;;
		'event: error') echo -n "stream ended: " ;;
		'data: '*)
			data=${line#data: }
			if [[ $status != 200 || $data == '{"code"'* ]]; then
				echo "$(field code "$data"): $(field message "$data")"
				continue
			fi
			local when
			when=$(field time "$data" | sed 's/.*T\([0-9:]*\)\(\.[0-9]\{3\}\)\?.*/\1\2/')
			case $data in
			*'"userOnline":'*) echo "$when online $(field userId "$data")" ;;
			*'"userOffline":'*) echo "$when offline $(field userId "$data")" ;;
			esac
			;;
		'{"code"'*) # an error answered before the stream started
			echo "refused ($status): $(field code "$line"): $(field message "$line")"
			case $status in
			503 | 429) ;; # retried below
			*) exit 1 ;;
			esac
			;;
		esac
	done < <(curl -sS -N -i "${auth[@]}" "${resume[@]}" \
		-H 'Content-Type: application/json' -H 'Accept: text/event-stream' \
		--data-binary '{"kinds":["EVENT_KIND_USER_ONLINE","EVENT_KIND_USER_OFFLINE"]}' \
		"$URL/pushgate.v1.PushService/WatchEvents" 2>&1)
}

while true; do
	watch
	sleep_ms=$((backoff_ms * (50 + RANDOM % 51) / 100))
	sleep "$((sleep_ms / 1000)).$(printf '%03d' $((sleep_ms % 1000)))"
	backoff_ms=$((backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2))
done
