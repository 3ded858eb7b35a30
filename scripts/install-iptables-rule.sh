#!/usr/bin/env bash
# Installs (or removes, or checks) the netfilter LOG rules that feed dockflow on a Docker host, and optionally the
# rsyslog drop-in that forwards those kernel lines to dockflow. The rules and the drop-in are rendered from the
# templates in rules/; this script only fills them in and applies them. Run with --help for the options.
set -euo pipefail

readonly MARK=dockflow
readonly CHECK_MARK=dockflow-check
readonly DROPIN_NAME=60-dockflow.conf
readonly DROPIN_HEADER='# dockflow: forward netfilter LOG lines to dockflow.'
readonly NFT_TABLE=dockflow
readonly NFT_CHECK_TABLE=dockflow_check

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

prefix='dockflow: '
limit='1000/second'
limit_burst=2000
log_level=warning
all_packets=0
host_traffic=0
bridges='docker0,br-+'
use_nft=0
ipv6=1
target=''
transport=tcp
tls_ca='' tls_cert='' tls_key='' tls_peer=''
rsyslog_dir=/etc/rsyslog.d
spool_dir=/var/spool/rsyslog
queue_max_disk=1g
no_local_copy=0
reload=1
rules_dir="$script_dir/../rules"
action=install
dry_run=0
iptables_cmd=${IPTABLES:-iptables}
ip6tables_cmd=${IP6TABLES:-ip6tables}

usage() {
  cat <<EOF
Usage: $(basename "$0") [options]

Puts netfilter LOG rules for dockflow on this Docker host: the first packet of each new forwarded connection
(DOCKER-USER, or FORWARD when Docker has not created DOCKER-USER yet), IPv4 and IPv6, with a rate limit. Every
rule carries the iptables comment "$MARK" (nftables: its own table "inet $NFT_TABLE"); nothing else is touched.
Running it again converges to one set of rules.

Actions (default: install)
  --uninstall             remove every rule this script added (both backends) and the rsyslog drop-in
  --check                 show what is installed and send one test packet through a LOG rule with the prefix
  --dry-run               print the commands and files instead of applying them (no root needed)

Rules
  --prefix STR            log prefix (default "dockflow: "; at most 29 characters: letters, digits, space, _.:/-)
  --limit RATE|none       rate limit per rule, N/second|minute|hour (default $limit)
  --limit-burst N         burst for the rate limit (default $limit_burst)
  --log-level LEVEL       syslog level of the lines: emerg alert crit err warning notice info debug or 0-7
                          (default $log_level)
  --all-packets           log every forwarded packet, not only the first of each connection
  --host-traffic          also log container -> host (INPUT from the bridges) and host -> container (OUTPUT)
  --bridges LIST          bridge interface patterns, comma separated, + as the wildcard (default $bridges)
  --nft                   use an nftables table "inet $NFT_TABLE" instead of iptables/ip6tables
  --no-ipv6               IPv4 only (iptables backend)
  IPTABLES=, IP6TABLES=   environment: the commands to run (e.g. iptables-legacy when Docker uses legacy)

Forwarding (rsyslog)
  --target HOST:PORT      install the rsyslog drop-in forwarding the lines to dockflow ([v6addr]:port)
  --transport tcp|tls|relp  how the drop-in sends (default tcp): plain TCP, TLS (rsyslog-gnutls; dockflow's
                          SYSLOG_TLS port) or RELP, acknowledged delivery (rsyslog-relp; dockflow's SYSLOG_RELP port)
  --ca FILE               TLS: CA certificate dockflow's certificate is verified against (required for tls)
  --cert FILE, --key FILE TLS: this host's client certificate and key, for dockflow's mutual TLS (both or neither)
  --permitted-peer NAME   TLS: name dockflow's certificate must carry (default: the --target host)
  --rsyslog-dir DIR       where the drop-in goes (default $rsyslog_dir; file $DROPIN_NAME)
  --spool-dir DIR         where the disk-assisted queue spills (default $spool_dir)
  --queue-max-disk SIZE   disk the queue may use (default $queue_max_disk)
  --no-local-copy         stop after forwarding, so the lines are not also written to kern.log
  --no-reload             do not restart rsyslog after changing the drop-in
  --rules-dir DIR         templates (default: rules/ beside this script)

  -h, --help              this text
EOF
}

die() {
  printf 'install-iptables-rule: error: %s\n' "$*" >&2
  exit 1
}
warn() { printf 'install-iptables-rule: warning: %s\n' "$*" >&2; }
info() { printf '%s\n' "$*"; }

need_value() {
  [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --prefix) need_value "$@"; prefix=$2; shift 2 ;;
    --limit) need_value "$@"; limit=$2; shift 2 ;;
    --limit-burst) need_value "$@"; limit_burst=$2; shift 2 ;;
    --log-level) need_value "$@"; log_level=$2; shift 2 ;;
    --all-packets) all_packets=1; shift ;;
    --host-traffic) host_traffic=1; shift ;;
    --bridges) need_value "$@"; bridges=$2; shift 2 ;;
    --nft) use_nft=1; shift ;;
    --no-ipv6) ipv6=0; shift ;;
    --target) need_value "$@"; target=$2; shift 2 ;;
    --transport) need_value "$@"; transport=$2; shift 2 ;;
    --ca) need_value "$@"; tls_ca=$2; shift 2 ;;
    --cert) need_value "$@"; tls_cert=$2; shift 2 ;;
    --key) need_value "$@"; tls_key=$2; shift 2 ;;
    --permitted-peer) need_value "$@"; tls_peer=$2; shift 2 ;;
    --rsyslog-dir) need_value "$@"; rsyslog_dir=$2; shift 2 ;;
    --spool-dir) need_value "$@"; spool_dir=$2; shift 2 ;;
    --queue-max-disk) need_value "$@"; queue_max_disk=$2; shift 2 ;;
    --no-local-copy) no_local_copy=1; shift ;;
    --no-reload) reload=0; shift ;;
    --rules-dir) need_value "$@"; rules_dir=$2; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    --check) action=check; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done

# --- validation: everything the templates receive is checked here, so no value can change a rule's meaning ---

# iptables caps --log-prefix at 29 characters; the character set keeps it a single safe word in every template.
[[ $prefix =~ ^[A-Za-z0-9_.:/\ -]{1,29}$ ]] || die "--prefix must be 1-29 characters of letters, digits, space and _.:/- (got '$prefix')"
[[ $prefix =~ [^\ ] ]] || die "--prefix must not be blank"
if [[ $limit != none ]]; then
  [[ $limit =~ ^[1-9][0-9]*/(second|minute|hour)$ ]] || die "--limit must be N/second, N/minute, N/hour or none (got '$limit')"
fi
[[ $limit_burst =~ ^[1-9][0-9]*$ ]] || die "--limit-burst must be a positive integer (got '$limit_burst')"
case $log_level in
  0 | emerg) ipt_level=emerg nft_level=emerg ;;
  1 | alert) ipt_level=alert nft_level=alert ;;
  2 | crit) ipt_level=crit nft_level=crit ;;
  3 | err | error) ipt_level=error nft_level=err ;;
  4 | warn | warning) ipt_level=warning nft_level=warn ;;
  5 | notice) ipt_level=notice nft_level=notice ;;
  6 | info) ipt_level=info nft_level=info ;;
  7 | debug) ipt_level=debug nft_level=debug ;;
  *) die "--log-level must be one of emerg alert crit err warning notice info debug or 0-7 (got '$log_level')" ;;
esac
IFS=, read -ra bridge_list <<<"$bridges"
[[ ${#bridge_list[@]} -gt 0 ]] || die "--bridges needs at least one interface pattern"
for b in "${bridge_list[@]}"; do
  # Interface names are at most 15 bytes; + is iptables' trailing wildcard.
  [[ $b =~ ^[A-Za-z0-9_.-]{1,15}\+?$ ]] || die "--bridges: '$b' is not an interface name or name+ pattern"
done
target_host='' target_port=''
if [[ -n $target ]]; then
  if [[ $target =~ ^\[([0-9A-Fa-f:.]+)\]:([0-9]+)$ || $target =~ ^([A-Za-z0-9.-]+):([0-9]+)$ ]]; then
    target_host=${BASH_REMATCH[1]} target_port=${BASH_REMATCH[2]}
  else
    die "--target must be HOST:PORT or [IPv6]:PORT (got '$target')"
  fi
  ((target_port >= 1 && target_port <= 65535)) || die "--target port must be 1-65535 (got $target_port)"
fi
for d in "$rsyslog_dir" "$spool_dir"; do
  [[ $d == /* && $d != *'"'* ]] || die "directories must be absolute paths without quotes (got '$d')"
done
case $transport in
  tcp | relp)
    [[ -z $tls_ca$tls_cert$tls_key$tls_peer ]] || die "--ca, --cert, --key and --permitted-peer are for --transport tls"
    ;;
  tls)
    [[ -n $tls_ca ]] || die "--transport tls needs --ca (the CA that signed dockflow's certificate)"
    [[ -n $tls_cert && -n $tls_key || -z $tls_cert$tls_key ]] || die "--cert and --key go together"
    for f in "$tls_ca" "$tls_cert" "$tls_key"; do
      [[ -z $f || $f =~ ^/[A-Za-z0-9_./+@-]+$ ]] || die "certificate and key files must be absolute paths of letters, digits and _./+@- (got '$f')"
    done
    [[ -n $tls_peer ]] || tls_peer=$target_host
    [[ $tls_peer =~ ^[A-Za-z0-9.*:-]+$ ]] || die "--permitted-peer must be a host name or address (got '$tls_peer')"
    ;;
  *) die "--transport must be tcp, tls or relp (got '$transport')" ;;
esac
[[ $queue_max_disk =~ ^[1-9][0-9]*[kmgKMG]?$ ]] || die "--queue-max-disk must be a size like 512m or 1g (got '$queue_max_disk')"
[[ -d $rules_dir ]] || die "rules directory not found: $rules_dir"
if ((all_packets && host_traffic)) && [[ $action == install ]]; then
  # Each forwarded line is itself a packet between the host and a container when dockflow runs in one.
  warn "--all-packets with --host-traffic logs the syslog traffic to a containerised dockflow too: a feedback loop"
fi

is_root() { [[ $(id -u) -eq 0 ]]; }
probe=1 # whether the live ruleset can be read (not in an unprivileged dry run)
if ! is_root; then
  if ((dry_run)) && [[ $action == install ]]; then
    probe=0
  else
    die "must run as root (try: sudo $0 ...), or use --dry-run to see the commands"
  fi
fi

require_tool() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found in PATH: $2"
}

# --- running or printing commands ---

run() {
  if ((dry_run)); then
    local w line=''
    for w in "$@"; do
      # Quotes only where needed, so the commands read like typed ones; validation keeps ' out of every word.
      if [[ $w =~ ^[A-Za-z0-9_.:/+=,@%-]+$ ]]; then line+=" $w"; else line+=" '$w'"; fi
    done
    printf '%s\n' "${line# }"
  else
    "$@"
  fi
}

# Writes stdin to a file, atomically, or prints it in a dry run.
write_file() {
  local path=$1 mode=$2 content
  content=$(cat)
  if ((dry_run)); then
    printf -- '--- would write %s (mode %s) ---\n%s\n--- end of %s ---\n' "$path" "$mode" "$content" "$path"
    return
  fi
  local tmp
  tmp=$(mktemp "$path.XXXXXX")
  printf '%s\n' "$content" >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
}

# --- templates ---

# Replaces @NAME@ inside template text; values are validated above and carry no template syntax.
fill() {
  local s=$1
  s=${s//@PREFIX@/$prefix}
  s=${s//@LEVEL@/$2}
  s=${s//@CHECK_PORT@/${check_port:-}}
  printf '%s' "$s"
}

state_words=() limit_words=()
((all_packets)) || state_words=(-m conntrack --ctstate NEW)
[[ $limit == none ]] || limit_words=(-m limit --limit "$limit" --limit-burst "$limit_burst")

# Prints the iptables rules of one family and hook from the template, one per line, words separated by \x1f (the
# prefix holds a space, so blanks cannot separate words). With a bridge, @BRIDGE@ takes that value.
ipt_rules() {
  local family=$1 hook=$2 bridge=${3:-} line fams h words w out
  while IFS= read -r line || [[ -n $line ]]; do
    [[ -z ${line// /} || $line == '#'* ]] && continue
    read -r fams h _ <<<"$line"
    [[ $h == "$hook" && ,$fams, == *,$family,* ]] || continue
    read -ra words <<<"$line"
    out=()
    for w in "${words[@]:2}"; do
      case $w in
        @STATE@) out+=("${state_words[@]}") ;;
        @LIMIT@) out+=("${limit_words[@]}") ;;
        @MARK@) out+=(-m comment --comment "$MARK") ;;
        @PREFIX@) out+=("$prefix") ;;
        @BRIDGE@) out+=("$bridge") ;;
        *) out+=("$(fill "$w" "$ipt_level")") ;;
      esac
    done
    (
      IFS=$'\x1f'
      printf '%s\n' "${out[*]}"
    )
  done <"$rules_dir/iptables.rules.tmpl"
}

# Renders an nftables template: drops ## lines, keeps @HOST@ lines only with --host-traffic, repeats @BRIDGE@ lines
# per bridge (nft writes the wildcard as *).
nft_render() {
  local file=$1 line b state='' lim=''
  ((all_packets)) || state='ct state new'
  [[ $limit == none ]] || lim="limit rate $limit burst $limit_burst packets"
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line == '##'* ]] && continue
    if [[ $line == '@HOST@'* ]]; then
      ((host_traffic)) || continue
      line=${line#@HOST@}
    fi
    line=${line//@STATE@ /${state:+$state }}
    line=${line//@LIMIT@ /${lim:+$lim }}
    line=$(fill "$line" "$nft_level")
    if [[ $line == *@BRIDGE@* ]]; then
      for b in "${bridge_list[@]}"; do
        if [[ $b == *+ ]]; then b="${b%+}*"; fi
        printf '%s\n' "${line//@BRIDGE@/$b}"
      done
    else
      printf '%s\n' "$line"
    fi
  done <"$rules_dir/$file"
}

render_dropin() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line == '##'* ]] && continue
    if [[ $line == '@NO_LOCAL_COPY@'* ]]; then
      ((no_local_copy)) || continue
      line=${line#@NO_LOCAL_COPY@}
    fi
    # Transport-specific lines: @TCP@, @TLS@, @RELP@, and @TLS_CLIENT@ (TLS with a client certificate).
    if [[ $line =~ ^@(TCP|TLS|RELP|TLS_CLIENT)@ ]]; then
      case ${BASH_REMATCH[1]} in
        TLS_CLIENT) [[ $transport == tls && -n $tls_cert ]] || continue ;;
        *) [[ ${BASH_REMATCH[1]} == "${transport^^}" ]] || continue ;;
      esac
      line=${line#"${BASH_REMATCH[0]}"}
    fi
    line=${line//@HOST@/$target_host}
    line=${line//@PORT@/$target_port}
    line=${line//@SPOOL_DIR@/$spool_dir}
    line=${line//@QUEUE_MAX_DISK@/$queue_max_disk}
    line=${line//@CA@/$tls_ca}
    line=${line//@CERT@/$tls_cert}
    line=${line//@KEY@/$tls_key}
    line=${line//@PEER@/$tls_peer}
    fill "$line" "$ipt_level"
    printf '\n'
  done <"$rules_dir/rsyslog-dockflow.conf.tmpl"
}

# --- iptables backend ---

ipt_for() { if [[ $1 == 4 ]]; then printf '%s' "$iptables_cmd"; else printf '%s' "$ip6tables_cmd"; fi; }

chain_exists() {
  ((probe)) || return 0
  "$(ipt_for "$1")" -w 10 -S "$2" >/dev/null 2>&1
}

forward_chain() {
  if chain_exists "$1" DOCKER-USER; then printf 'DOCKER-USER'; else printf 'FORWARD'; fi
}

# Splits one `iptables -S` line into words (its double quotes hold the prefix's space), \x1f separated.
split_saved_rule() {
  local s=$1 word='' quoted=0 have=0 c i out=()
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    if ((quoted)); then
      if [[ $c == "\\" ]]; then
        i=$((i + 1))
        word+=${s:i:1}
      elif [[ $c == '"' ]]; then quoted=0; else word+=$c; fi
    elif [[ $c == '"' ]]; then
      quoted=1 have=1
    elif [[ $c == ' ' ]]; then
      ((have)) && out+=("$word")
      word='' have=0
    else
      word+=$c have=1
    fi
  done
  ((have)) && out+=("$word")
  (
    IFS=$'\x1f'
    printf '%s\n' "${out[*]}"
  )
}

# Prints our rules (comment marker) of one family as `iptables -S` lines; a third argument -v adds counters.
ipt_marked() {
  local family=$1 mark=$2 chain ipt
  ((probe)) || return 0
  ipt=$(ipt_for "$family")
  for chain in DOCKER-USER FORWARD INPUT OUTPUT; do
    chain_exists "$family" "$chain" || continue
    "$ipt" -w 10 ${3:+"$3"} -S "$chain" | grep -E -- "(^| )--comment \"?$mark\"?( |$)" || true
  done
}

ipt_remove_marked() {
  local family=$1 mark=$2 line words ipt
  ipt=$(ipt_for "$family")
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    IFS=$'\x1f' read -ra words <<<"$(split_saved_rule "$line")"
    [[ ${words[0]} == -A ]] || continue
    run "$ipt" -w 10 -D "${words[@]:1}"
  done < <(ipt_marked "$family" "$mark")
}

# The desired rules of one family as `CHAIN\x1fword...` lines, in order.
ipt_desired() {
  local family=$1 fwd b r
  fwd=$(forward_chain "$family")
  while IFS= read -r r; do printf '%s\x1f%s\n' "$fwd" "$r"; done < <(ipt_rules "$family" forward)
  if ((host_traffic)); then
    for b in "${bridge_list[@]}"; do
      while IFS= read -r r; do printf 'INPUT\x1f%s\n' "$r"; done < <(ipt_rules "$family" input "$b")
      while IFS= read -r r; do printf 'OUTPUT\x1f%s\n' "$r"; done < <(ipt_rules "$family" output "$b")
    done
  fi
}

ipt_install() {
  local family ipt desired have n present rule words chain
  declare -A position
  for family in 4 6; do
    ipt=$(ipt_for "$family")
    if [[ $family == 6 ]] && ((!ipv6)); then
      # --no-ipv6 after an install with IPv6: converge by removing ours there.
      ((probe)) && command -v "$ipt" >/dev/null 2>&1 && ipt_remove_marked 6 "$MARK"
      continue
    fi
    if ((probe)); then
      require_tool "$ipt" "install iptables (apt-get install iptables), or pass --no-ipv6 / --nft"
      if ! chain_exists "$family" DOCKER-USER; then
        warn "IPv$family: chain DOCKER-USER does not exist (Docker not running, or its IPv$family rules off); using FORWARD. Run again once Docker is up to move the rule."
      fi
    else
      info "# not root: assuming DOCKER-USER exists and nothing is installed yet"
    fi
    mapfile -t desired < <(ipt_desired "$family")
    have=$(ipt_marked "$family" "$MARK" | grep -c . || true)
    present=0
    for rule in "${desired[@]}"; do
      IFS=$'\x1f' read -ra words <<<"$rule"
      if ((probe)) && "$ipt" -w 10 -C "${words[@]}" >/dev/null 2>&1; then present=$((present + 1)); fi
    done
    if ((present == ${#desired[@]} && have == ${#desired[@]})); then
      info "IPv$family: already installed (${#desired[@]} rules), nothing to do"
      continue
    fi
    if ((have > 0)); then
      info "IPv$family: replacing $have rule(s) from an earlier install"
      ipt_remove_marked "$family" "$MARK"
    fi
    position=()
    for rule in "${desired[@]}"; do
      IFS=$'\x1f' read -ra words <<<"$rule"
      chain=${words[0]}
      n=$((${position[$chain]:-0} + 1))
      position[$chain]=$n
      # At the top of the chain, so Docker's or the admin's later rules (DROP, RETURN) cannot hide a connection.
      run "$ipt" -w 10 -I "$chain" "$n" "${words[@]:1}"
    done
    ((dry_run)) || info "IPv$family: installed ${#desired[@]} rule(s)"
  done
}

ipt_uninstall() {
  local family ipt count
  for family in 4 6; do
    ipt=$(ipt_for "$family")
    command -v "$ipt" >/dev/null 2>&1 || continue
    # An interrupted --check may have left its rule behind.
    ipt_remove_marked "$family" "$CHECK_MARK"
    count=$(ipt_marked "$family" "$MARK" | grep -c . || true)
    ((count > 0)) || continue
    ipt_remove_marked "$family" "$MARK"
    ((dry_run)) || info "IPv$family: removed $count rule(s)"
  done
}

# --- nftables backend ---

nft_has_table() {
  ((probe)) && command -v nft >/dev/null 2>&1 && nft list table inet "$1" >/dev/null 2>&1
}

nft_install() {
  ((probe)) && require_tool nft "install nftables (apt-get install nftables)"
  local ruleset
  ruleset=$(nft_render nftables.nft.tmpl)
  if ((dry_run)); then
    printf 'nft -f - <<NFT\n%s\nNFT\n' "$ruleset"
    return
  fi
  printf '%s\n' "$ruleset" | nft -f -
  info "nftables: table inet $NFT_TABLE installed"
}

nft_uninstall() {
  if nft_has_table "$NFT_TABLE"; then
    run nft delete table inet "$NFT_TABLE"
    ((dry_run)) || info "nftables: table inet $NFT_TABLE removed"
  fi
}

# --- rsyslog ---

dropin_path() { printf '%s/%s' "$rsyslog_dir" "$DROPIN_NAME"; }

restart_rsyslog() {
  local pid
  if ((!reload)); then
    info "rsyslog: not restarted (--no-reload); restart it to load $(dropin_path)"
    return
  fi
  # rsyslog v8 does not re-read its configuration on SIGHUP (it only reopens files): a restart is needed.
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet rsyslog; then
    run systemctl restart rsyslog
  elif pid=$(pidof rsyslogd 2>/dev/null) && command -v service >/dev/null 2>&1 && [[ -x /etc/init.d/rsyslog ]]; then
    run service rsyslog restart
  elif [[ -n ${pid:-} ]]; then
    warn "rsyslogd (pid $pid) is not managed by systemd or service: restart it yourself to load $(dropin_path) (SIGHUP does not re-read the configuration)"
  else
    warn "rsyslogd is not running: start it to forward the lines (it reads $(dropin_path))"
  fi
}

dropin_install() {
  local path content tmp
  path=$(dropin_path)
  content=$(render_dropin)
  if ((dry_run)); then
    write_file "$path" 0644 <<<"$content"
    run mkdir -p "$spool_dir"
    return
  fi
  [[ -d $rsyslog_dir ]] || die "rsyslog drop-in directory $rsyslog_dir does not exist (is rsyslog installed? apt-get install rsyslog)"
  if [[ -f $path && "$(cat "$path")" == "$content" ]]; then
    info "rsyslog: $path unchanged"
    return
  fi
  if command -v rsyslogd >/dev/null 2>&1; then
    tmp=$(mktemp)
    printf '%s\n' "$content" >"$tmp"
    if ! rsyslogd -N1 -f "$tmp" >"$tmp.out" 2>&1; then
      cat "$tmp.out" >&2
      rm -f "$tmp" "$tmp.out"
      die "rsyslogd rejected the rendered drop-in; nothing was written"
    fi
    rm -f "$tmp" "$tmp.out"
  else
    warn "rsyslogd not found: writing $path anyway (apt-get install rsyslog)"
  fi
  mkdir -p "$spool_dir"
  write_file "$path" 0644 <<<"$content"
  info "rsyslog: wrote $path (forwarding to $target over $transport)"
  restart_rsyslog
}

dropin_uninstall() {
  local path spool
  path=$(dropin_path)
  [[ -f $path ]] || return 0
  if [[ $(head -n 1 "$path") != "$DROPIN_HEADER" ]]; then
    warn "$path was not written by this script (first line differs): left in place"
    return
  fi
  spool=$(grep -o 'queue.spoolDirectory="[^"]*"' "$path" | cut -d'"' -f2 || true)
  run rm -f "$path"
  ((dry_run)) || info "rsyslog: removed $path (queue files in ${spool:-$spool_dir}, if any, are kept)"
  restart_rsyslog
}

# --- check ---

check() {
  local family ipt lines found=0 seen
  info "== installed rules"
  for family in 4 6; do
    ipt=$(ipt_for "$family")
    command -v "$ipt" >/dev/null 2>&1 || continue
    lines=$(ipt_marked "$family" "$MARK" -v)
    if [[ -n $lines ]]; then
      found=1
      info "IPv$family ($ipt):"
      printf '  %s\n' "${lines//$'\n'/$'\n'  }"
    fi
  done
  if nft_has_table "$NFT_TABLE"; then
    found=1
    info "nftables:"
    nft list table inet "$NFT_TABLE" | sed 's/^/  /'
  fi
  ((found)) || warn "no dockflow rules are installed"

  info "== forwarding"
  if [[ -f $(dropin_path) ]]; then
    info "$(dropin_path): $(grep -o 'target="[^"]*" port="[^"]*"' "$(dropin_path)" || echo 'no target found')"
  else
    info "$(dropin_path): not installed"
  fi
  if pidof rsyslogd >/dev/null 2>&1; then info "rsyslogd running (pid $(pidof rsyslogd))"; else warn "rsyslogd is not running"; fi

  info "== test packet"
  check_port=$((33434 + RANDOM % 100))
  if nft_has_table "$NFT_TABLE" || ! command -v "$iptables_cmd" >/dev/null 2>&1; then
    require_tool nft "install nftables or iptables"
    nft_render nftables-check.nft.tmpl | nft -f -
    send_check_datagram
    nft delete table inet "$NFT_CHECK_TABLE"
  else
    local words
    IFS=$'\x1f' read -ra words <<<"$(ipt_rules 4 check)"
    "$iptables_cmd" -w 10 -I OUTPUT 1 "${words[@]}"
    send_check_datagram
    "$iptables_cmd" -w 10 -D OUTPUT "${words[@]}"
  fi
  seen=''
  if command -v dmesg >/dev/null 2>&1; then
    seen=$(dmesg 2>/dev/null | tail -n 500 | grep -F -- "${prefix}" | grep -F "DPT=$check_port " | tail -n 1 || true)
  fi
  if [[ -n $seen ]]; then
    info "kernel logged: $seen"
  else
    warn "the test line was not seen in dmesg (inside a network namespace the kernel logs only with sysctl net.netfilter.nf_log_all_netns=1)"
  fi
  info "sent a UDP datagram to 127.0.0.1:$check_port through a LOG rule with prefix '$prefix';"
  info "dockflow should now hold a flow with destination.port $check_port (direction other)."
}

send_check_datagram() {
  # Nothing listens there; the kernel answers with an ICMP port unreachable on loopback.
  if ! { printf 'dockflow check\n' >"/dev/udp/127.0.0.1/$check_port"; } 2>/dev/null; then
    warn "could not send the test datagram to 127.0.0.1:$check_port (is the loopback interface up?)"
  fi
}

# --- main ---

case $action in
  install)
    if ((use_nft)); then
      ((probe)) && ipt_uninstall
      nft_install
    else
      nft_uninstall
      ipt_install
    fi
    [[ -z $target ]] || dropin_install
    ;;
  uninstall)
    ipt_uninstall
    nft_uninstall
    dropin_uninstall
    ;;
  check)
    check
    ;;
esac
