#!/bin/sh
# mmdebstrap customize hook of trove-netiso's MariaDB image: $1 is the root being built, this
# script's folder holds the image's own files. Runs after the packages are installed, before
# mmdebstrap's own clean-up (apt lists and caches) and the tarball.
set -eu
root="$1"
here="$(dirname "$0")"

install -m 0755 "$here/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"

# Debian's /etc/mysql (mariadb.conf.d binds to 127.0.0.1, debian.cnf names a maintenance user
# the container never has) gives way to a folder that only includes conf.d, like the one
# Trove binds over it.
rm -rf "$root/etc/mysql"
install -d -m 0755 "$root/etc/mysql" "$root/etc/mysql/conf.d"
install -m 0644 "$here/my.cnf" "$root/etc/mysql/my.cnf"
install -m 0644 "$here/image-defaults.cnf" "$root/etc/my.cnf"

# The package's post-install script made a data directory; each container makes its own.
rm -rf "$root/var/lib/mysql"
chroot "$root" install -d -o mysql -g mysql -m 0755 /var/lib/mysql
# Any uid may create the socket here when the folder is not bound from the host. The build
# keeps /run (mmdebstrap --skip=cleanup/run) for this folder alone.
find "$root/run" -mindepth 1 -delete
install -d -m 1777 "$root/run/mysqld"

# Nothing starts on its own in a container; drop the systemd units' enablement links (the
# socket unit among them) and the host's name and resolver, which Docker provides.
rm -rf "$root/etc/systemd/system/"*.wants/mariadb* \
	"$root/var/lib/systemd/deb-systemd-helper-enabled" \
	"$root/etc/resolv.conf" "$root/etc/hostname"

# What dpkg's path excludes cannot catch: logs of the build and caches.
rm -rf "$root/var/log/"*.log "$root/var/log/apt" "$root/var/cache/debconf/"*-old \
	"$root/var/cache/man"
