"""Regenerate the sample corpus PDFs (our own text, free to ship): `python samples/make_samples.py`.

Two short fictional company reports, one English and one Chinese, with facts on known pages so a
newcomer can try `citeqa ask` right after `make run`.
"""

from __future__ import annotations

from pathlib import Path

import pymupdf

HERE = Path(__file__).parent

EN_TITLE = "Lumen Robotics Inc. — Annual Report 2024 (sample)"
EN_PAGES = [
    """Lumen Robotics Inc. Annual Report 2024

Letter to shareholders

Lumen Robotics designs autonomous warehouse robots. In fiscal year 2024 the company shipped 4,820 robots, up from 3,150 in 2023. Total revenue was $412.6 million, an increase of 37% compared with $301.2 million in fiscal 2023.

The company is headquartered in Pittsburgh, Pennsylvania, and employed 1,240 people at the end of the year. Chief executive officer Maria Delgado has led the company since 2019.""",
    """Results of operations

Gross margin improved to 41.5% from 36.8% a year earlier, mainly because the cost of the lidar module fell by a third after the move to a second supplier.

Research and development expenses were $88.4 million, or 21% of revenue. Net income was $27.9 million, the company's first profitable year.

Recurring software subscriptions reached $96.0 million of annual recurring revenue at year end; 61% of customers use the fleet-management subscription.""",
    """Risks and outlook

The largest customer accounted for 18% of revenue. A disruption at the contract manufacturer in Penang, Malaysia could delay shipments by up to two quarters.

For fiscal 2025 the company expects revenue between $520 million and $560 million and plans to open a second assembly line in Monterrey, Mexico. The board approved a share buyback of up to $50 million.""",
]

ZH_TITLE = "星河新能源股份有限公司 2024年年度报告（摘要，示例）"
ZH_PAGES = [
    """星河新能源股份有限公司2024年年度报告摘要

第一节 公司简介

星河新能源股份有限公司主要从事储能电池系统的研发、生产和销售。公司总部位于江苏省苏州市，截至2024年12月31日共有员工3,560人。董事长为林晓峰先生。

报告期内，公司实现营业收入58.3亿元，同比增长24.6%；归属于上市公司股东的净利润为6.12亿元，同比增长31.8%。""",
    """第二节 经营情况讨论与分析

一、主营业务

2024年公司储能系统出货量为8.7吉瓦时，其中海外市场占比42%。公司在德国慕尼黑设立了欧洲服务中心。

二、研发投入

报告期内研发投入为4.35亿元，占营业收入的7.5%。公司新增授权发明专利126项，其中钠离子电池相关专利38项。""",
    """第三节 风险因素与未来展望

公司面临碳酸锂价格波动的风险。2024年碳酸锂采购均价同比下降约55%，降低了电芯成本。

2025年，公司计划在安徽省合肥市新建年产10吉瓦时的储能电池工厂，预计总投资约32亿元，计划于2026年投产。公司拟向全体股东每10股派发现金红利2.50元（含税）。""",
]


def write_pdf(path: Path, title: str, pages: list[str], font: str) -> None:
    doc = pymupdf.open()
    doc.set_metadata({"title": title, "author": "citeqa sample corpus", "creator": "samples/make_samples.py"})
    for i, text in enumerate(pages, 1):
        page = doc.new_page(width=595, height=842)
        page.insert_textbox(pymupdf.Rect(60, 60, 535, 760), text, fontname=font, fontsize=11, lineheight=1.4)
        page.insert_text((290, 810), str(i), fontname="helv", fontsize=9)
    doc.save(str(path), garbage=3, deflate=True)
    doc.close()


def main() -> None:
    write_pdf(HERE / "lumen_robotics_annual_report_2024.pdf", EN_TITLE, EN_PAGES, "helv")
    write_pdf(HERE / "xinghe_energy_annual_report_2024.pdf", ZH_TITLE, ZH_PAGES, "china-s")


if __name__ == "__main__":
    main()
