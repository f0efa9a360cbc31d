# The load test's body, shared by tests/load.sh (server_epoll) and
# tests/nginx_load.sh (nginx with the rktls module); sourced after
# tests/lib.sh. Needs $T, $CA, $BIN (the example client), $TIMEOUT_MS.
#
#   load_files                    f1, f2, f3 under $T/www and their sha256
#   (start the server on $port; $spid: the process whose fds and RSS count)
#   load_rounds "WHOSE"           warm-up, then two rounds of 200 clients,
#                                 fds and RSS checked after each ("WHOSE open
#                                 fds back to the start")
# Each round starts, concurrently: 50 curl (TLS 1.2 and 1.3, some fetching
# two files over one kept-alive connection), 40 `openssl s_client -quiet`
# with a GET piped in, 40 of the example `client --get`, and 70 misbehaving
# clients (tests/load_bad.py). All 200 wait at a start line and begin
# together.

load_files() {
  mkdir -p "$T/www"
  head -c 1000 /dev/urandom > "$T/www/f1"
  head -c 65536 /dev/urandom > "$T/www/f2"
  head -c 1048576 /dev/urandom > "$T/www/f3"
  declare -gA want size
  local f
  for f in f1 f2 f3; do want[$f]=$(sha "$T/www/$f"); size[$f]=$(stat -c %s "$T/www/$f"); done
}

fds() { ls "/proc/$spid/fd" | wc -l; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$spid/status"; }

# One good client: writes "ok ..." or "FAIL ..." to $T/res/ROUND-I.
result() { echo "$2" > "$T/res/$1"; }
# A start barrier, so that the 200 clients really run at once: each says it
# is ready, then waits for the go file. `read -t` on a FIFO nobody writes is
# a sleep without a fork (130 forking loops would load the machine).
barrier() { # ID
  local _
  : > "$T/ready/$1"
  exec 9<>"$T/idle"
  until [ -e "$T/go" ]; do read -r -t 0.02 -u 9 _; done
  exec 9<&-
}
good_curl() { # ID I
  local id=$1 i=$2 f=f$((i % 3 + 1)) v=$((i % 2 + 2)) o=$T/out/$1
  barrier "$id"
  if [ $((i % 5)) = 0 ]; then # two files, one connection
    out=$(timeout 30 curl -sS --cacert "$CA" --tlsv1.$v --tls-max 1.$v -o "$o.a" -o "$o.b" \
      -w '%{num_connects}' "https://localhost:$port/$f" "https://localhost:$port/f1" 2> "$o.err")
    [ $? = 0 ] && [ "$out" = 10 ] && [ "$(sha "$o.a")" = "${want[$f]}" ] && [ "$(sha "$o.b")" = "${want[f1]}" ] &&
      result "$id" "ok curl TLS 1.$v $f + f1 on one connection" ||
      result "$id" "FAIL curl TLS 1.$v $f + f1 (connects $out): $(tail -1 "$o.err")"
  else
    timeout 30 curl -sS --cacert "$CA" --tlsv1.$v --tls-max 1.$v -o "$o" "https://localhost:$port/$f" 2> "$o.err" &&
      [ "$(sha "$o")" = "${want[$f]}" ] && result "$id" "ok curl TLS 1.$v $f" ||
      result "$id" "FAIL curl TLS 1.$v $f: $(tail -1 "$o.err")"
  fi
}
good_s_client() { # ID I
  local id=$1 i=$2 f=f$((i % 3 + 1)) v=$((i % 2 + 2)) o=$T/out/$1
  barrier "$id"
  printf 'GET /%s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' $f |
    timeout 30 openssl s_client -quiet -connect "127.0.0.1:$port" -servername localhost -tls1_$v \
      -CAfile "$CA" -verify_return_error > "$o" 2> "$o.err"
  local rc=$?
  # The output is the response head then exactly Content-Length bytes.
  [ $rc = 0 ] && head -c 17 "$o" | grep -q '^HTTP/1.1 200 OK' &&
    [ "$(tail -c "${size[$f]}" "$o" | sha256sum | cut -d' ' -f1)" = "${want[$f]}" ] &&
    result "$id" "ok s_client TLS 1.$v $f" || result "$id" "FAIL s_client TLS 1.$v $f: exit $rc $(tail -1 "$o.err")"
}
good_client() { # ID I
  local id=$1 i=$2 f=f$((i % 3 + 1)) o=$T/out/$1
  barrier "$id"
  timeout 30 "$BIN/client" --port "$port" --ca "$CA" --get "/$f" --out "$o" > "$o.log" 2>&1 &&
    [ "$(sha "$o")" = "${want[$f]}" ] && result "$id" "ok client $f" ||
    result "$id" "FAIL client $f: $(tail -1 "$o.log")"
}

round() { # N
  local r=$1 i cpids=() t0=$SECONDS
  rm -rf "$T/res" "$T/out" "$T/ready" "$T/go"; mkdir -p "$T/res" "$T/out" "$T/ready"
  [ -p "$T/idle" ] || mkfifo "$T/idle"
  timeout 60 python3 tests/load_bad.py "$port" "$CA" $TIMEOUT_MS 10 "$T/ready/bad" "$T/go" \
    > "$T/bad-$r.log" 2>&1 &
  local bpid=$!
  for i in $(seq 1 50); do good_curl "$r-curl-$i" "$i" & cpids+=($!); done
  for i in $(seq 1 40); do good_s_client "$r-sclient-$i" "$i" & cpids+=($!); done
  for i in $(seq 1 40); do good_client "$r-client-$i" "$i" & cpids+=($!); done
  local end=$((SECONDS + 30))
  until [ "$(ls "$T/ready" | wc -l)" -ge 131 ] || [ $SECONDS -ge $end ]; do sleep 0.05; done
  check "round $r: 200 clients ready at the start line" [ "$(ls "$T/ready" | wc -l)" = 131 ]
  : > "$T/go"
  wait "${cpids[@]}"
  wait $bpid; local brc=$?
  local good_ok good_fail
  good_ok=$(cat "$T"/res/*-* | grep -c '^ok')
  good_fail=$(cat "$T"/res/*-* | grep '^FAIL' || true)
  check "round $r: 130 good clients (50 curl, 40 s_client, 40 client) got their files intact [$good_ok ok]" \
    [ "$good_ok" = 130 ]
  [ -z "$good_fail" ] || echo "$good_fail" | head -10 | sed 's/^/    /'
  check "round $r: 70 bad clients got an alert or a close, none hung, stalls timed out [$(grep -c '^ok' "$T/bad-$r.log") ok]" \
    [ $brc = 0 -a "$(grep -c '^ok' "$T/bad-$r.log")" = 70 ]
  [ $brc = 0 ] || grep -v '^ok' "$T/bad-$r.log" | head -10 | sed 's/^/    /'
  echo "     (round $r: $((SECONDS - t0)) s)"
}

settle() { # wait (at most 15 s) for every connection to be gone: fds back to the start
  local end=$((SECONDS + 15))
  until [ "$(fds)" -le "$fd0" ] || [ $SECONDS -ge $end ]; do sleep 0.1; done
}

load_rounds() { # WHOSE ("the server's", "the worker's")
  local whose=$1 i
  # The fd and RSS levels once listening and warmed up (a few connections
  # first: a kTLS probe and lazy one-time setup are not per connection).
  for i in 1 2 3; do timeout 30 curl -sS --cacert "$CA" -o /dev/null "https://localhost:$port/f3"; done
  sleep 0.2
  fd0=$(fds) rss0=$(rss_kb)
  echo "     start: $fd0 fds, VmRSS $rss0 kB"
  round 1
  settle
  fd1=$(fds) rss1=$(rss_kb)
  echo "     after round 1: $fd1 fds, VmRSS $rss1 kB"
  check "round 1: $whose open fds back to the start ($fd1 vs $fd0)" [ "$fd1" = "$fd0" ]
  check "round 1: VmRSS $rss1 kB <= start $rss0 kB + 16 MB" [ "$rss1" -le $((rss0 + 16384)) ]
  round 2
  settle
  fd2=$(fds) rss2=$(rss_kb)
  echo "     after round 2: $fd2 fds, VmRSS $rss2 kB"
  check "round 2: $whose open fds back to the start ($fd2 vs $fd0)" [ "$fd2" = "$fd0" ]
  check "round 2: VmRSS $rss2 kB <= round 1 $rss1 kB + 2 MB (no growth per round)" [ "$rss2" -le $((rss1 + 2048)) ]
}
