CREATE TABLE `accounts` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `domain_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `type` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_accounts_domain_id` (`domain_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `alerts` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `type` varchar(64) DEFAULT NULL,
  `severity` varchar(16) DEFAULT NULL,
  `subject` varchar(512) DEFAULT NULL,
  `description` text DEFAULT NULL,
  `resource_type` varchar(32) DEFAULT NULL,
  `resource_id` varchar(36) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `cleared_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_alerts_type` (`type`),
  KEY `idx_alerts_resource_id` (`resource_id`),
  KEY `idx_alerts_zone_id` (`zone_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `api_keys` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `role` varchar(16) DEFAULT NULL,
  `hash` varchar(64) DEFAULT NULL,
  `prefix` varchar(16) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `idx_api_keys_hash` (`hash`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `clusters` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `pod_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `hypervisor_type` varchar(32) DEFAULT NULL,
  `endpoint` varchar(512) DEFAULT NULL,
  `username` varchar(255) DEFAULT NULL,
  `credential_ref` varchar(255) DEFAULT NULL,
  `datacenter` varchar(255) DEFAULT NULL,
  `insecure` tinyint(1) DEFAULT NULL,
  `allocation_state` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_clusters_zone_id` (`zone_id`),
  KEY `idx_clusters_pod_id` (`pod_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `domains` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `parent_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `path` varchar(1024) DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `events` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `type` varchar(64) DEFAULT NULL,
  `level` varchar(16) DEFAULT NULL,
  `description` text DEFAULT NULL,
  `resource_type` varchar(32) DEFAULT NULL,
  `resource_id` varchar(36) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `operation_id` varchar(36) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_events_type` (`type`),
  KEY `idx_events_resource_id` (`resource_id`),
  KEY `idx_events_zone_id` (`zone_id`),
  KEY `idx_events_operation_id` (`operation_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `guest_vms` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `network_id` varchar(36) DEFAULT NULL,
  `account_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `mac` varchar(32) DEFAULT NULL,
  `ip` varchar(64) DEFAULT NULL,
  `state` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_guest_vms_zone_id` (`zone_id`),
  KEY `idx_guest_vms_network_id` (`network_id`),
  KEY `idx_guest_vms_account_id` (`account_id`),
  KEY `idx_guest_vms_state` (`state`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `health_check_results` (
  `router_id` varchar(36) NOT NULL,
  `check_name` varchar(128) NOT NULL,
  `check_type` varchar(16) DEFAULT NULL,
  `success` tinyint(1) DEFAULT NULL,
  `last_updated` datetime(3) DEFAULT NULL,
  `details` text DEFAULT NULL,
  `consecutive_failures` bigint(20) DEFAULT NULL,
  PRIMARY KEY (`router_id`,`check_name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `health_recreations` (
  `operation_id` varchar(36) NOT NULL,
  `router_id` varchar(36) DEFAULT NULL,
  `check_name` varchar(128) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `failures` bigint(20) DEFAULT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`operation_id`),
  KEY `idx_health_recreation_router` (`router_id`,`check_name`),
  KEY `idx_health_recreations_zone_id` (`zone_id`),
  KEY `idx_health_recreations_created_at` (`created_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `host_keys` (
  `address` varchar(255) NOT NULL,
  `key` blob DEFAULT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`address`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `hosts` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `pod_id` varchar(36) DEFAULT NULL,
  `cluster_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `hypervisor_type` varchar(32) DEFAULT NULL,
  `endpoint` varchar(512) DEFAULT NULL,
  `address` varchar(255) DEFAULT NULL,
  `state` varchar(32) DEFAULT NULL,
  `state_reason` varchar(1024) DEFAULT NULL,
  `cpus` bigint(20) DEFAULT NULL,
  `cpu_m_hz` bigint(20) DEFAULT NULL,
  `memory_mb` bigint(20) DEFAULT NULL,
  `version` varchar(64) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_hosts_zone_id` (`zone_id`),
  KEY `idx_hosts_pod_id` (`pod_id`),
  KEY `idx_hosts_cluster_id` (`cluster_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `load_balancer_backends` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `rule_id` varchar(36) DEFAULT NULL,
  `ip` varchar(64) DEFAULT NULL,
  `port` bigint(20) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_load_balancer_backends_rule_id` (`rule_id`),
  CONSTRAINT `fk_load_balancer_rules_backends` FOREIGN KEY (`rule_id`) REFERENCES `load_balancer_rules` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `load_balancer_rules` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `network_id` varchar(36) DEFAULT NULL,
  `public_ip` varchar(64) DEFAULT NULL,
  `public_port` bigint(20) DEFAULT NULL,
  `algorithm` varchar(32) DEFAULT NULL,
  `max_conn` bigint(20) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_load_balancer_rules_network_id` (`network_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `networks` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `domain_id` varchar(36) DEFAULT NULL,
  `account_id` varchar(36) DEFAULT NULL,
  `vpc_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `type` varchar(32) DEFAULT NULL,
  `redundant` tinyint(1) DEFAULT NULL,
  `gateway` varchar(64) DEFAULT NULL,
  `c_id_r` varchar(64) DEFAULT NULL,
  `services` varchar(512) DEFAULT NULL,
  `state` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_networks_zone_id` (`zone_id`),
  KEY `idx_networks_domain_id` (`domain_id`),
  KEY `idx_networks_account_id` (`account_id`),
  KEY `idx_networks_vpc_id` (`vpc_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `operation_steps` (
  `operation_id` varchar(36) NOT NULL,
  `step` varchar(64) NOT NULL,
  `completed_at` datetime(3) DEFAULT NULL,
  `detail` varchar(1024) DEFAULT NULL,
  PRIMARY KEY (`operation_id`,`step`),
  KEY `idx_operation_steps_completed_at` (`completed_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `operations` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `kind` varchar(64) DEFAULT NULL,
  `target_type` varchar(32) DEFAULT NULL,
  `target_id` varchar(36) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `workflow_id` varchar(255) DEFAULT NULL,
  `run_id` varchar(64) DEFAULT NULL,
  `status` varchar(16) DEFAULT NULL,
  `result` text DEFAULT NULL,
  `error` text DEFAULT NULL,
  `requested_by` varchar(255) DEFAULT NULL,
  `completed_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_operations_kind` (`kind`),
  KEY `idx_operations_target_id` (`target_id`),
  KEY `idx_operations_zone_id` (`zone_id`),
  KEY `idx_operations_workflow_id` (`workflow_id`),
  KEY `idx_operations_status` (`status`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `pods` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `gateway` varchar(64) DEFAULT NULL,
  `netmask` varchar(64) DEFAULT NULL,
  `start_ip` varchar(64) DEFAULT NULL,
  `end_ip` varchar(64) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_pods_zone_id` (`zone_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `port_forwarding_rules` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `network_id` varchar(36) DEFAULT NULL,
  `public_ip` varchar(64) DEFAULT NULL,
  `public_port` bigint(20) DEFAULT NULL,
  `public_end_port` bigint(20) DEFAULT NULL,
  `private_ip` varchar(64) DEFAULT NULL,
  `private_port` bigint(20) DEFAULT NULL,
  `private_end_port` bigint(20) DEFAULT NULL,
  `protocol` varchar(8) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_port_forwarding_rules_network_id` (`network_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `secondary_stores` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `url` varchar(512) DEFAULT NULL,
  `protocol` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_secondary_stores_zone_id` (`zone_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `secrets` (
  `name` varchar(255) NOT NULL,
  `kind` varchar(32) DEFAULT NULL,
  `ciphertext` blob DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `service_offerings` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `cpus` bigint(20) DEFAULT NULL,
  `cpu_m_hz` bigint(20) DEFAULT NULL,
  `memory_mb` bigint(20) DEFAULT NULL,
  `system_vm_type` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `settings` (
  `name` varchar(128) NOT NULL,
  `scope` varchar(16) NOT NULL,
  `scope_id` varchar(36) NOT NULL,
  `value` text DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`name`,`scope`,`scope_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `storage_pools` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `pod_id` varchar(36) DEFAULT NULL,
  `cluster_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `scope` varchar(16) DEFAULT NULL,
  `type` varchar(64) DEFAULT NULL,
  `path` varchar(512) DEFAULT NULL,
  `capacity_bytes` bigint(20) DEFAULT NULL,
  `used_bytes` bigint(20) DEFAULT NULL,
  `state` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_storage_pools_zone_id` (`zone_id`),
  KEY `idx_storage_pools_cluster_id` (`cluster_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `system_vms` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `type` varchar(32) DEFAULT NULL,
  `state` varchar(32) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `pod_id` varchar(36) DEFAULT NULL,
  `cluster_id` varchar(36) DEFAULT NULL,
  `host_id` varchar(36) DEFAULT NULL,
  `storage_pool_id` varchar(36) DEFAULT NULL,
  `hypervisor_type` varchar(32) DEFAULT NULL,
  `template_id` varchar(36) DEFAULT NULL,
  `version` varchar(64) DEFAULT NULL,
  `service_offering_id` varchar(36) DEFAULT NULL,
  `cpus` bigint(20) DEFAULT NULL,
  `memory_mb` bigint(20) DEFAULT NULL,
  `public_ip` varchar(64) DEFAULT NULL,
  `private_ip` varchar(64) DEFAULT NULL,
  `link_local_ip` varchar(64) DEFAULT NULL,
  `public_mac` varchar(32) DEFAULT NULL,
  `private_mac` varchar(32) DEFAULT NULL,
  `link_local_mac` varchar(32) DEFAULT NULL,
  `network_id` varchar(36) DEFAULT NULL,
  `vpc_id` varchar(36) DEFAULT NULL,
  `domain_id` varchar(36) DEFAULT NULL,
  `account_id` varchar(36) DEFAULT NULL,
  `is_redundant` tinyint(1) DEFAULT NULL,
  `redundant_state` varchar(16) DEFAULT NULL,
  `active_viewers` bigint(20) DEFAULT NULL,
  `health_checks_failed` tinyint(1) DEFAULT NULL,
  `removed_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_system_vms_name` (`name`),
  KEY `idx_system_vms_type` (`type`),
  KEY `idx_system_vms_state` (`state`),
  KEY `idx_system_vms_zone_id` (`zone_id`),
  KEY `idx_system_vms_pod_id` (`pod_id`),
  KEY `idx_system_vms_cluster_id` (`cluster_id`),
  KEY `idx_system_vms_host_id` (`host_id`),
  KEY `idx_system_vms_network_id` (`network_id`),
  KEY `idx_system_vms_vpc_id` (`vpc_id`),
  KEY `idx_system_vms_domain_id` (`domain_id`),
  KEY `idx_system_vms_account_id` (`account_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `template_pool_refs` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `template_id` varchar(36) DEFAULT NULL,
  `pool_id` varchar(36) DEFAULT NULL,
  `state` varchar(32) DEFAULT NULL,
  `download_pct` bigint(20) DEFAULT NULL,
  `install_path` varchar(1024) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `idx_tpl_pool` (`template_id`,`pool_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `templates` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `hypervisor` varchar(32) DEFAULT NULL,
  `format` varchar(32) DEFAULT NULL,
  `url` varchar(1024) DEFAULT NULL,
  `checksum` varchar(200) DEFAULT NULL,
  `type` varchar(32) DEFAULT NULL,
  `version` varchar(64) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `size_bytes` bigint(20) DEFAULT NULL,
  `state` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_templates_name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `vpcs` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `zone_id` varchar(36) DEFAULT NULL,
  `domain_id` varchar(36) DEFAULT NULL,
  `account_id` varchar(36) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `c_id_r` varchar(64) DEFAULT NULL,
  `redundant` tinyint(1) DEFAULT NULL,
  `state` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_vpcs_zone_id` (`zone_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `zones` (
  `id` varchar(36) NOT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `name` varchar(255) DEFAULT NULL,
  `network_type` varchar(32) DEFAULT NULL,
  `dns1` varchar(64) DEFAULT NULL,
  `internal_dns1` varchar(64) DEFAULT NULL,
  `allocation_state` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `idx_zones_name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

