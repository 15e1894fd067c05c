# Installing on a hub: `make install` (this machine), `make install DESTDIR=/tmp/stage` (a staged
# tree), `make uninstall [PURGE=1]`, `make deb` (build/veea-hmd_<version>_<arch>.deb).
# The work is done by scripts/install.sh and scripts/build-deb.sh; docs/install.md explains it.
PREFIX ?= /usr
DESTDIR ?=
SYSCONFDIR ?= /etc
PURGE ?= 0
INSTALL_ENV = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" SYSCONFDIR="$(SYSCONFDIR)" PURGE="$(PURGE)"

.PHONY: install uninstall deb

install: build
	@$(INSTALL_ENV) ./scripts/install.sh install

uninstall:
	@$(INSTALL_ENV) ./scripts/install.sh uninstall

deb: build
	@./scripts/build-deb.sh build
