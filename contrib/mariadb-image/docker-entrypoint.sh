#!/bin/bash
# Entrypoint of trove-netiso's MariaDB image (Debian 12 packages). It behaves like the official
# `mariadb`/`mysql` images on what OpenStack Trove relies on:
#   - arguments starting with `-` are options for mariadbd (Trove passes `--datadir=...`);
#   - an empty data directory is initialised on first start: system tables, time zones unless
#     MYSQL_INITDB_SKIP_TZINFO / MARIADB_INITDB_SKIP_TZINFO is set, root@localhost and
#     root@'%' (MARIADB_ROOT_HOST) with MARIADB_ROOT_PASSWORD / MYSQL_ROOT_PASSWORD (or their
#     _FILE variants); an existing one is kept as it is;
#   - it runs as whatever uid:gid the container is given; started as root it drops to `mysql`;
#   - mariadbd is exec'd, so it is PID 1 and `docker stop` shuts it down cleanly.
# The root password never reaches the command line of a process or the log.
set -euo pipefail

say() {
	printf '%s [Note] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2
}

die() {
	printf '%s [ERROR] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2
	exit 1
}

# First value of MARIADB_<name>, MYSQL_<name>, or the file named by MARIADB_<name>_FILE /
# MYSQL_<name>_FILE.
setting() {
	local name="$1" variable
	for variable in "MARIADB_$name" "MYSQL_$name"; do
		if [ -n "${!variable:-}" ]; then
			printf '%s' "${!variable}"
			return
		fi
		local file_variable="${variable}_FILE"
		if [ -n "${!file_variable:-}" ]; then
			[ -r "${!file_variable}" ] || die "$file_variable names an unreadable file"
			cat -- "${!file_variable}"
			return
		fi
	done
}

# One option's effective value as mariadbd sees it: configuration files, then the arguments.
# The values are in the table after the dashed line; the help text above it wraps words such
# as "socket" onto lines of their own.
server_option() {
	local option="$1"
	shift
	{ "$@" --verbose --help 2>/dev/null || true; } |
		awk -v option="$option" '/^-+ +-+$/ { table = 1; next }
			table && $1 == option { print $2; exit }'
}

# Escapes a value for a single-quoted SQL string (backslash escapes stay enabled, see below).
sql_string() {
	local value="$1"
	value="${value//\\/\\\\}"
	value="${value//\'/\\\'}"
	printf "'%s'" "$value"
}

initialise() {
	local datadir="$1"
	shift
	local password allow_empty root_host
	password="$(setting ROOT_PASSWORD)"
	allow_empty="$(setting ALLOW_EMPTY_ROOT_PASSWORD)"
	root_host="$(setting ROOT_HOST)"
	root_host="${root_host:-%}"
	if [ -z "$password" ] && [ -z "$allow_empty" ]; then
		die "the data directory $datadir is empty and no root password is set: set MARIADB_ROOT_PASSWORD (or MYSQL_ROOT_PASSWORD, or a _FILE variant), or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1"
	fi

	say "initialising the data directory $datadir"
	mkdir -p -- "$datadir"
	local install_user=()
	# The configuration may say `user = mysql` (Trove's template does); only root may hand files
	# to another user, so any other uid keeps them as its own.
	if [ "$(id -u)" != 0 ]; then install_user=(--user=); fi
	mariadb-install-db "${install_user[@]}" --datadir="$datadir" --rpm \
		--auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
		--default-time-zone=SYSTEM --enforce-storage-engine= --skip-log-bin \
		--expire-logs-days=0 --loose-innodb_buffer_pool_load_at_startup=0 \
		--loose-innodb_buffer_pool_dump_at_shutdown=0 "${@:2}" >/dev/null

	# A private socket and no TCP: nothing (a health check included) can reach the server
	# before root has its password.
	local private socket
	private="$(mktemp -d)"
	socket="$private/init.sock"
	"$@" --skip-networking --socket="$socket" --default-time-zone=SYSTEM --wsrep-on=OFF \
		--expire-logs-days=0 --skip-slave-start --skip-log-bin \
		--loose-innodb_buffer_pool_load_at_startup=0 \
		--loose-innodb_buffer_pool_dump_at_shutdown=0 &
	local pid=$!
	local client=(mariadb --no-defaults --protocol=socket --socket="$socket" --user=root --database=mysql)
	local tries
	for tries in $(seq 300); do
		if "${client[@]}" --execute='SELECT 1' >/dev/null 2>&1; then break; fi
		kill -0 "$pid" 2>/dev/null || die "the temporary server stopped during initialisation"
		[ "$tries" -lt 300 ] || die "the temporary server did not answer within 60 s"
		sleep 0.2
	done

	if [ -z "$(setting INITDB_SKIP_TZINFO)" ]; then
		say "loading time zones"
		mariadb-tzinfo-to-sql --skip-write-binlog /usr/share/zoneinfo 2>/dev/null | "${client[@]}"
	fi

	say "setting the root password for root@localhost and root@'$root_host'"
	local pw host
	pw="$(sql_string "$password")"
	host="$(sql_string "$root_host")"
	# Through standard input, never as an argument: the password stays out of `ps`.
	"${client[@]}" <<-SQL
		SET @@SESSION.SQL_LOG_BIN = 0;
		SET @@SESSION.SQL_MODE = REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');
		DROP USER IF EXISTS root@'127.0.0.1', root@'::1';
		EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname, '\'');
		DROP USER IF EXISTS ''@'localhost';
		EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS \'\'@\'', @@hostname, '\'');
		SET PASSWORD FOR root@'localhost' = PASSWORD($pw);
		$(if [ "$root_host" != localhost ]; then
			printf 'CREATE USER root@%s IDENTIFIED BY %s;\n' "$host" "$pw"
			printf 'GRANT ALL ON *.* TO root@%s WITH GRANT OPTION;\n' "$host"
			printf "GRANT PROXY ON ''@'%%' TO root@%s WITH GRANT OPTION;\n" "$host"
		fi)
	SQL

	kill -TERM "$pid"
	wait "$pid" || die "the temporary server did not stop cleanly"
	rmdir -- "$private"
	say "the data directory is ready"
}

if [ "${1:0:1}" = '-' ]; then
	set -- mariadbd "$@"
fi

if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then
	exec "$@"
fi
for argument in "${@:2}"; do
	case "$argument" in
	-'?' | --help | --print-defaults | -V | --version) exec "$@" ;;
	esac
done

# Trove's my.cnf ends in `!includedir /etc/mysql/conf.d/`, a folder the guest makes with its
# first override; mariadbd refuses to start while an included folder is missing.
if [ ! -e /etc/mysql/conf.d ] && [ -w /etc/mysql ]; then
	mkdir /etc/mysql/conf.d
fi

datadir="$(server_option datadir "$@")"
if [ -z "$datadir" ]; then
	"$@" --verbose --help >/dev/null || true
	die "mariadbd reports no datadir: see its complaint above (options or configuration files)"
fi
socket="$(server_option socket "$@")"

if [ "$(id -u)" = 0 ]; then
	# Like the official image: root hands the data and the socket folder to `mysql` and runs
	# the rest as that user.
	mkdir -p -- "$datadir" "${socket%/*}"
	find "$datadir" "${socket%/*}" \! -user mysql -exec chown mysql:mysql '{}' +
	exec setpriv --reuid=mysql --regid=mysql --init-groups -- "$0" "$@"
fi

[ -w "${datadir%/}" ] || [ ! -e "${datadir%/}" ] ||
	die "uid $(id -u) cannot write the data directory $datadir"
if [ ! -d "${datadir%/}/mysql" ]; then
	initialise "${datadir%/}" "$@"
fi
exec "$@"
