# Host-side peers for the kTLS VM (sourced by tests/vm/ktls.sh, bash): this
# host's openssl s_client and gnutls-cli (no kTLS here) against offloaded
# rktls servers in the VM, and openssl s_server against an offloaded rktls
# client in the VM, sending TLS 1.3 KeyUpdates mid-stream. The VM side is
# tests/vm/peers_guest.sh. Each case asserts the behaviour of the kernel
# booted ($VM_KERNEL: rekey = Linux >= 6.14 with rekey, lts = 6.12 without),
# from what the peer printed (openssl -msg shows every record it sends and
# receives) and from the server's "conn N end=..." line with its
# /proc/net/tls_stat deltas.
#
# Needs: $T (scratch dir), $CERTS, $VMLOG (serve.sh's output, growing),
# ok/bad functions, wait_for (tests/lib.sh); ports from serve.sh's READY line.

# Result codes (include/rktls.h).
R_CLOSED=200 R_KEY_EXHAUSTED=409 R_NO_REKEY=411

# peer_start NAME CMD...: run CMD with stdin from a fifo kept open on fd 3,
# stdout in $T/NAME.out, stderr in $T/NAME.err; sets $ppid.
peer_start() {
  local name=$1; shift
  rm -f "$T/$name.in"; mkfifo "$T/$name.in"
  "$@" < "$T/$name.in" > "$T/$name.out" 2> "$T/$name.err" 5>&- &
  ppid=$!; pids+=("$ppid")
  exec 3> "$T/$name.in"
  P=$T/$name
}
say() { printf '%s\n' "$1" >&3; }
peer_end() { exec 3>&-; local i=0; while kill -0 "$ppid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; kill "$ppid" 2>/dev/null || true; wait "$ppid" 2>/dev/null || true; }
# seen FILE REGEX: wait (20 s) for a line; count FILE REGEX N: until N such lines.
seen() { WAIT=${WAIT_PEER:-30} wait_for "$1" "$2" "$ppid"; }
count_is() { # FILE REGEX N
  local end=$((SECONDS + 30))
  until [ "$(grep -ac "$2" "$1" 2>/dev/null)" -ge "$3" ]; do
    kill -0 "$ppid" 2>/dev/null || return 1
    [ $SECONDS -lt $end ] || return 1
    sleep 0.05
  done
}
# The server's end line for connection N on guest port TAG (waits 60 s).
end_line() { # TAG N
  local end=$((SECONDS + 60)) l
  while :; do
    l=$(grep -a "^\[$1\] conn $2 end=" "$VMLOG" | head -1)
    [ -n "$l" ] && { echo "$l"; return 0; }
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}
# field LINE NAME: the value after NAME= in LINE.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }
stats_are() { # LINE RxRekeyOk TxRekeyOk RxRekeyReceived (errors must be +0)
  [ "$(field "$1" RxRekeyOk)" = "+$2" ] && [ "$(field "$1" TxRekeyOk)" = "+$3" ] &&
    [ "$(field "$1" RxRekeyReceived)" = "+$4" ] && [ "$(field "$1" RxRekeyError)" = +0 ] &&
    [ "$(field "$1" TxRekeyError)" = +0 ] && [ "$(field "$1" DecryptError)" = +0 ]
}
KU_SENT='^>>> TLS 1.3, Handshake \[length 0005\], KeyUpdate'
KU_RECV='^<<< TLS 1.3, Handshake \[length 0005\], KeyUpdate'
INTERNAL_ERROR='^<<< TLS 1.3, Alert \[length 0002\], fatal internal_error'
# The 5 bytes printed after the N-th received KeyUpdate (e.g. "18 00 00 01 00").
ku_bytes() { grep -a -A1 "$KU_RECV" "$1" | sed -n 's/^    \(18 .*\)$/\1/p' | sed -n "${2}p" | sed 's/ *$//'; }

s_client() { # PORT
  peer_start "$1" openssl s_client -connect "127.0.0.1:$2" -servername localhost \
    -CAfile "$CERTS/ca.pem" -verify_return_error -tls1_3 -msg
}
detail() { # NAME SERVER_LINE: the peer's last output
  echo "  --- $1 (stdout, stderr tails)"
  tail -n 15 "$T/$1.out" | sed 's/^/  | /'
  tail -n 5 "$T/$1.err" | sed 's/^/  | /'
  echo "  server: ${2:-}"
}

host_peers() { # PORTMAP (GP:HP,...) S_SERVER_PORT S_SERVER_LOG
  local map=$1 line p4433 p4434 p4435 p4436 ok
  p4433=$(sed -n 's/.*4433:\([0-9]*\).*/\1/p' <<<"$map")
  p4434=$(sed -n 's/.*4434:\([0-9]*\).*/\1/p' <<<"$map")
  p4435=$(sed -n 's/.*4435:\([0-9]*\).*/\1/p' <<<"$map")
  p4436=$(sed -n 's/.*4436:\([0-9]*\).*/\1/p' <<<"$map")

  # 0. rktls_ktls_can_rekey() in each of the 4 server processes (before any
  # connection; the client's is checked in case 6).
  local want=0
  [ "$VM_KERNEL" = rekey ] && want=1
  [ "$(grep -ac "^\[443[3-6]\] can_rekey=$want$" "$VMLOG")" = 4 ] &&
    ok "rktls_ktls_can_rekey() = $want in each of the 4 server processes on this kernel" ||
    bad "rktls_ktls_can_rekey() (want $want): $(grep -a 'can_rekey=' "$VMLOG" | tr '\n' ' ')"

  # 1. s_client: k, then K (asking for ours), data after each, both ways.
  s_client a1 "$p4433"
  ok=0
  if seen "$P.out" '^Verify return code: 0' && say before-k && seen "$P.out" '^before-k$'; then
    say k
    if [ "$VM_KERNEL" = rekey ]; then
      count_is "$P.out" "$KU_SENT" 1 && say after-k && seen "$P.out" '^after-k$' &&
        say K && count_is "$P.out" "$KU_SENT" 2 && say after-K && seen "$P.out" '^after-K$' &&
        [ "$(grep -ac "$KU_RECV" "$P.out")" = 1 ] && [ "$(ku_bytes "$P.out" 1)" = "18 00 00 01 00" ] && ok=1
    else
      seen "$P.out" "$INTERNAL_ERROR" && ok=1
    fi
  fi
  peer_end
  line=$(end_line 4433 1) || line="(no end line)"
  if [ "$VM_KERNEL" = rekey ]; then
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_CLOSED ] && stats_are "$line" 2 1 2 &&
      ok "host s_client -> offloaded server: k and K mid-stream, data intact both ways, our KeyUpdate answered K, RX +2 TX +1 in the kernel" ||
      { bad "host s_client k/K -> offloaded server"; detail a1 "$line"; }
  else
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_NO_REKEY ] && [ "$(field "$line" bytes)" = 9 ] &&
      [ "$(field "$line" alert_sent)" = 80 ] && ! grep -aq '^after' "$P.out" &&
      ok "host s_client k -> offloaded server (6.12): data before it echoed, RKTLS_ERR_KTLS_NO_REKEY, s_client got internal_error" ||
      { bad "host s_client k -> offloaded server (6.12)"; detail a1 "$line"; }
  fi

  # 2. refresh_keys(conn, true) on the server, with s_client, then gnutls-cli.
  s_client a2 "$p4433"
  ok=0
  if seen "$P.out" '^Verify return code: 0' && say x1 && seen "$P.out" '^x1$' && say UPDATE &&
     seen "$P.out" '^UPDATE$'; then
    if [ "$VM_KERNEL" = rekey ]; then
      count_is "$P.out" "$KU_RECV" 1 && [ "$(ku_bytes "$P.out" 1)" = "18 00 00 01 01" ] &&
        say x2 && seen "$P.out" '^x2$' && count_is "$P.out" "$KU_SENT" 1 && ok=1
    else
      say x2 && seen "$P.out" '^x2$' && [ "$(grep -ac "$KU_RECV" "$P.out")" = 0 ] && ok=1
    fi
  fi
  peer_end
  line=$(end_line 4433 2) || line="(no end line)"
  if [ "$VM_KERNEL" = rekey ]; then
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_CLOSED ] && stats_are "$line" 1 1 1 &&
      grep -aq '^\[4433\] refresh_keys(true): 0$' "$VMLOG" &&
      ok "refresh_keys(request_peer) with s_client: update_requested sent, OpenSSL's KeyUpdate back, data after, TX +1 RX +1" ||
      { bad "refresh_keys with s_client"; detail a2 "$line"; }
  else
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_CLOSED ] && stats_are "$line" 0 0 0 &&
      grep -aq "^\[4433\] refresh_keys(true): $R_NO_REKEY$" "$VMLOG" &&
      ok "refresh_keys on 6.12 with s_client: RKTLS_ERR_KTLS_NO_REKEY, nothing sent, the connection carries on" ||
      { bad "refresh_keys on 6.12 with s_client"; detail a2 "$line"; }
  fi

  peer_start a3 gnutls-cli --x509cafile "$CERTS/ca.pem" -p "$p4433" \
    --priority 'NORMAL:-VERS-ALL:+VERS-TLS1.3' localhost
  ok=0
  if seen "$P.out" 'Handshake was completed' && say g1 && seen "$P.out" '^g1$' && say UPDATE &&
     seen "$P.out" '^UPDATE$'; then
    if [ "$VM_KERNEL" = rekey ]; then
      # GnuTLS reads the KeyUpdate with g2's echo at the earliest and
      # sends its own with its next record (g3).
      say g2 && seen "$P.out" '^g2$' && say g3 && seen "$P.out" '^g3$' && ok=1
    else
      say g2 && seen "$P.out" '^g2$' && ok=1
    fi
  fi
  peer_end
  line=$(end_line 4433 3) || line="(no end line)"
  if [ "$VM_KERNEL" = rekey ]; then
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_CLOSED ] && stats_are "$line" 1 1 1 &&
      ok "refresh_keys(request_peer) with gnutls-cli: data after it both ways, TX +1 RX +1 (GnuTLS answered)" ||
      { bad "refresh_keys with gnutls-cli"; detail a3 "$line"; }
  else
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_CLOSED ] && stats_are "$line" 0 0 0 &&
      [ "$(grep -ac "^\[4433\] refresh_keys(true): $R_NO_REKEY$" "$VMLOG")" = 2 ] &&
      ok "refresh_keys on 6.12 with gnutls-cli: RKTLS_ERR_KTLS_NO_REKEY, the connection carries on" ||
      { bad "refresh_keys on 6.12 with gnutls-cli"; detail a3 "$line"; }
  fi

  # 3. Key limit 8 records: 100 records from the server.
  s_client b "$p4434"
  ok=0
  seen "$P.out" '^Verify return code: 0' && say "BULK 100" &&
    { [ "$VM_KERNEL" != rekey ] || seen "$P.out" '^bulk line 099$'; } && ok=1
  [ "$VM_KERNEL" = rekey ] || seen "$P.out" '^<<< TLS 1.3, Alert \[length 0002\], warning close_notify' || ok=0
  peer_end
  line=$(end_line 4434 1) || line="(no end line)"
  local lines rekeys
  lines=$(grep -ac '^bulk line [0-9]*$' "$P.out")
  rekeys=$(grep -ac "$KU_RECV" "$P.out")
  if [ "$VM_KERNEL" = rekey ]; then
    [ $ok = 1 ] && [ "$lines" = 100 ] && [ "$(field "$line" end)" = $R_CLOSED ] &&
      [ "$rekeys" -ge 10 ] && [ "$(field "$line" TxRekeyOk)" = "+$rekeys" ] &&
      [ "$(field "$line" TxRekeyError)" = +0 ] && [ "$(field "$line" RxRekeyError)" = +0 ] &&
      ok "key limit 8 records: 100 lines intact at s_client across $rekeys KeyUpdates, TxRekeyOk +$rekeys" ||
      { bad "key limit with s_client ($lines lines, $rekeys KeyUpdates)"; detail b "$line"; }
  else
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_KEY_EXHAUSTED ] && [ "$rekeys" = 0 ] &&
      [ "$lines" -lt 100 ] &&
      ok "key limit 8 records on 6.12: RKTLS_ERR_KEY_EXHAUSTED after $lines lines, close_notify to s_client" ||
      { bad "key limit on 6.12 ($lines lines)"; detail b "$line"; }
  fi

  # 4. RKTLS_KTLS_RX_NEEDS_REKEY: a peer's k is fine on both kernels.
  s_client c "$p4435"
  ok=0
  seen "$P.out" '^Verify return code: 0' && say n1 && seen "$P.out" '^n1$' && say k &&
    count_is "$P.out" "$KU_SENT" 1 && say n2 && seen "$P.out" '^n2$' && ok=1
  peer_end
  line=$(end_line 4435 1) || line="(no end line)"
  if [ "$VM_KERNEL" = rekey ]; then
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_CLOSED ] && [ "$(field "$line" rx)" = 1 ] &&
      stats_are "$line" 1 0 1 &&
      ok "RX_NEEDS_REKEY: RX in the kernel, s_client's k rekeyed it (RX +1), data after it" ||
      { bad "RX_NEEDS_REKEY with s_client k"; detail c "$line"; }
  else
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_CLOSED ] && [ "$(field "$line" rx)" = 0 ] &&
      stats_are "$line" 0 0 0 &&
      ok "RX_NEEDS_REKEY on 6.12: RX stayed in userspace, s_client's k survived, data after it" ||
      { bad "RX_NEEDS_REKEY on 6.12 with s_client k"; detail c "$line"; }
  fi

  # 5. Event style server: K from s_client.
  s_client d "$p4436"
  ok=0
  if seen "$P.out" '^Verify return code: 0' && say e1 && seen "$P.out" '^e1$' && say K; then
    if [ "$VM_KERNEL" = rekey ]; then
      count_is "$P.out" "$KU_SENT" 1 && say e2 && seen "$P.out" '^e2$' &&
        [ "$(grep -ac "$KU_RECV" "$P.out")" = 1 ] && ok=1
    else
      seen "$P.out" "$INTERNAL_ERROR" && ok=1
    fi
  fi
  peer_end
  line=$(end_line 4436 1) || line="(no end line)"
  if [ "$VM_KERNEL" = rekey ]; then
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_CLOSED ] && stats_are "$line" 1 1 1 &&
      ok "event style with s_client K: RX rekeyed, our KeyUpdate sent, data after it both ways" ||
      { bad "event style with s_client K"; detail d "$line"; }
  else
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_NO_REKEY ] &&
      ok "event style with s_client K on 6.12: RKTLS_ERR_KTLS_NO_REKEY, internal_error" ||
      { bad "event style with s_client K on 6.12"; detail d "$line"; }
  fi

  # 6. The offloaded rktls client in the VM against s_server here. The
  # client ends the connection (BYE): the guest reaches s_server through
  # qemu's guestfwd, which never passes the host side's close on to the
  # guest (qemu's net/slirp.c sets no chardev event handler for it), so a
  # client waiting for s_server to close would wait until the timeout.
  # Servers ending first are control.c's cases, inside the VM.
  ppid=$SSERVER_PID; P=$T/sserver; exec 3>&5 5>&-
  ok=0
  if seen "$P.out" '^hello from rktls$' && say s1 && seen "$P.out" '^s1$'; then
    say k
    if [ "$VM_KERNEL" = rekey ]; then
      count_is "$P.out" "$KU_SENT" 1 && say s2 && seen "$P.out" '^s2$' && say K &&
        count_is "$P.out" "$KU_SENT" 2 && say s3 && seen "$P.out" '^s3$' &&
        count_is "$P.out" "$KU_RECV" 1 && [ "$(ku_bytes "$P.out" 1)" = "18 00 00 01 00" ] &&
        say UPDATE && count_is "$P.out" "$KU_RECV" 2 && [ "$(ku_bytes "$P.out" 2)" = "18 00 00 01 01" ] &&
        say s4 && seen "$P.out" '^s4$' && say BYE && seen "$P.out" '^CONNECTION CLOSED' && ok=1
    else
      seen "$P.out" "$INTERNAL_ERROR" && ok=1
    fi
  fi
  peer_end
  line=$(end_line client 1) || line="(no end line)"
  grep -aq "^\[client\] can_rekey=$want$" "$VMLOG" || ok=0
  if [ "$VM_KERNEL" = rekey ]; then
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_CLOSED ] && stats_are "$line" 3 2 3 &&
      ok "offloaded client <- host s_server: k, K (answered), refresh_keys(request_peer); data intact; RX +3 TX +2" ||
      { bad "offloaded client vs s_server k/K"; detail sserver "$line"; }
  else
    [ $ok = 1 ] && [ "$(field "$line" end)" = $R_NO_REKEY ] && [ "$(field "$line" alert_sent)" = 80 ] &&
      ok "offloaded client <- host s_server k (6.12): data before it, RKTLS_ERR_KTLS_NO_REKEY, s_server got internal_error" ||
      { bad "offloaded client vs s_server k (6.12)"; detail sserver "$line"; }
  fi
}

# Start openssl s_server on a free port here before the VM boots (the
# client in the VM reaches it as 10.0.2.100:4444); sets SSERVER_PORT.
start_s_server() {
  SSERVER_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -f "$T/sserver.in"; mkfifo "$T/sserver.in"
  openssl s_server -accept "127.0.0.1:$SSERVER_PORT" -naccept 1 -tls1_3 -msg \
    -cert "$CERTS/server.pem" -key "$CERTS/server.key" \
    < "$T/sserver.in" > "$T/sserver.out" 2> "$T/sserver.err" &
  SSERVER_PID=$!; pids+=("$SSERVER_PID")
  exec 5> "$T/sserver.in"   # keeps its stdin open until the case runs
  # (start every other background process with 5>&-, or s_server never sees EOF)
}
