#!/usr/bin/env bash
# An order service that tells a merchant's open pages about its orders through
# pushgate's HTTP/JSON API, with nothing but bash and curl (the way a PHP or
# shell backend would): a pop-up when an order is paid, and another when the
# customer asks where the order is.
#
# Usage: order-service.sh [http-url [api-key [merchant-id]]]; what is not given
# comes from PUSHGATE_HTTP_URL (default http://127.0.0.1:8080),
# PUSHGATE_API_KEY (default none) and MERCHANT_ID (default merchant-42).
set -euo pipefail

URL=${1:-${PUSHGATE_HTTP_URL:-http://127.0.0.1:8080}}
API_KEY=${2:-${PUSHGATE_API_KEY:-}}
MERCHANT_ID=${3:-${MERCHANT_ID:-merchant-42}}

DEADLINE_SECONDS=3 # every call gets this long; a call that takes longer is retried
MAX_ATTEMPTS=5     # attempts per message, the first included
ORDER_TTL=600s     # how long an order waits for a page to open (10 minutes)

# call METHOD BODY: POSTs BODY to the method; sets STATUS (the gRPC code's
# name, OK on success) and ANSWER (the JSON answer). curl's own failures are
# UNAVAILABLE (pushgate unreachable) or DEADLINE_EXCEEDED (no answer in time).
# Retries (CURL_WAIT set) wait, within their deadline, for pushgate to accept
# connections again.
call() {
	local out rc=0
	local auth=()
	[[ -n $API_KEY ]] && auth=(-H "Authorization: Bearer $API_KEY")
	local wait=()
	[[ -n ${CURL_WAIT:-} ]] && wait=(--retry-connrefused --retry 3 --retry-max-time "$DEADLINE_SECONDS")
	out=$(curl -sS --max-time "$DEADLINE_SECONDS" "${wait[@]}" "${auth[@]}" \
		-H 'Content-Type: application/json' --data-binary "$2" \
		-w '\n%{http_code}' "$URL/pushgate.v1.PushService/$1" 2>/dev/null) || rc=$?
	case $rc in
	0) ;;
	28) STATUS=DEADLINE_EXCEEDED ANSWER='' && return ;;
	*) STATUS=UNAVAILABLE ANSWER='' && return ;;
	esac
	ANSWER=${out%$'\n'*}
	if [[ ${out##*$'\n'} == 200 ]]; then
		STATUS=OK
	else
		# Errors are {"code":"invalid_argument","message":"..."}.
		STATUS=$(field code "$ANSWER" | tr '[:lower:]' '[:upper:]')
	fi
}

# field NAME JSON: the value of the first field NAME in JSON, unquoted
# (pushgate writes its answers as compact JSON).
field() {
	sed -n 's/.*"'"$1"'":\("\([^"\\]\|\\.\)*"\|[^,}]*\).*/\1/p' <<<"$2" | sed 's/^"\(.*\)"$/\1/'
}

# json_string TEXT: TEXT as a JSON string.
json_string() {
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

# push TYPE PAYLOAD IDEMPOTENCY_KEY: sends one message to every open page of
# the merchant. The idempotency key is derived from the event, so the same
# event sent twice (a retry below, or this script running the event again)
# pops up once: pushgate answers repeats with the first call's answer.
# UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried; anything
# else will not get better by retrying.
push() {
	local type=$1 payload=$2 key=$3
	local body
	body="{\"userId\":$(json_string "$MERCHANT_ID"),\"message\":{\"type\":\"$type\",\"json\":$(json_string "$payload"),\"ttl\":\"$ORDER_TTL\",\"idempotencyKey\":\"$key\"}}"
	local backoff_ms=250 # doubling: 250 ms, 500 ms, 1 s, 2 s, each with jitter
	local attempt
	for ((attempt = 1; attempt <= MAX_ATTEMPTS; attempt++)); do
		CURL_WAIT=
		((attempt == 1)) || CURL_WAIT=1
		call SendToUser "$body"
		case $STATUS in
		OK)
			report "$type"
			return 0
			;;
		UNAVAILABLE | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED)
			if ((attempt == MAX_ATTEMPTS)); then
				break
			fi
			# Jitter (half to all of the backoff), so that many senders do
			# not retry in step.
			local sleep_ms=$((backoff_ms * (50 + RANDOM % 51) / 100))
			echo "$type: $STATUS (attempt $attempt of $MAX_ATTEMPTS), retrying in $sleep_ms ms with the same idempotency key"
			sleep "$((sleep_ms / 1000)).$(printf '%03d' $((sleep_ms % 1000)))"
			backoff_ms=$((backoff_ms * 2))
			;;
		*) break ;;
		esac
	done
	echo "push failed: $STATUS: $(field message "$ANSWER")" >&2
	return 1
}

report() {
	local online
	online=$(field online "$ANSWER")
	echo "$1 -> $MERCHANT_ID: online=$online delivered_connections=$(field deliveredConnections "$ANSWER") stored=$(field stored "$ANSWER") message_id=$(field messageId "$ANSWER")"
	if [[ $online != true ]]; then
		echo "$MERCHANT_ID is offline: the message waits 10 minutes in the inbox; falling back to SMS as well (not sent by this example)"
	fi
}

# presence: how many pages the merchant has open (GetPresence), before the
# order is sent. A failure here is only reported: the pushes decide.
presence() {
	call GetPresence "{\"userIds\":[$(json_string "$MERCHANT_ID")]}"
	if [[ $STATUS == OK ]]; then
		echo "$MERCHANT_ID has $(field connections "$ANSWER") open page(s)"
	else
		echo "presence of $MERCHANT_ID unknown: $STATUS"
	fi
}

order_id=1786543212345678901
order_no=20261122001
presence
# The payload is written as text: order_id is a 64-bit integer and must reach
# the browser exactly as written here.
push order.paid "{\"type\":1,\"orderId\":$order_id,\"content\":\"订单号: $order_no\"}" "order-$order_id-paid"
push order.remind "{\"type\":2,\"orderId\":$order_id,\"content\":\"顾客催单: $order_no\"}" "order-$order_id-remind-1"
